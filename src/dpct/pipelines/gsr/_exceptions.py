"""Errors raised by the GSR solver before it starts, each naming the problem and the fix."""

from __future__ import annotations

from dpct.errors import DpctError


class GsrInputError(DpctError, ValueError):
    """The GSR system is not valid input for the solver; see the message for the fix."""

    exit_code = 2


class EmptySystemError(GsrInputError):
    """The GSR system has no observation rows; give at least one observation per unknown."""


class LayoutError(GsrInputError):
    """The GSR system's arrays have the wrong shape, dtype or order; build it with make_system."""


class InvalidIndexError(GsrInputError):
    """Rows reference a star, attitude knot or instrument unknown that the system does not have."""


class NonFiniteError(GsrInputError):
    """Rows hold NaN or infinite coefficients, times, right-hand sides or weights; drop them."""


class RankDeficientError(GsrInputError):
    """The system does not determine every unknown; add observations or constraint equations."""


class CheckpointMismatchError(GsrInputError):
    """The checkpoint was written for another system or other settings; use a new path."""
