"""EMS: events written by every subsystem in the same transaction as the change."""

from dpct.events import service

__all__ = ["service"]
