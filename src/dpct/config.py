"""Settings: one validated object built at start-up and passed down, never imported deep."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """The data directory used when DPCT_HOME is unset: ``$XDG_DATA_HOME/dpct``.

    A per-user data directory keeps a laptop demo out of the source tree and away from
    other users; production installs set DPCT_HOME to the DPC's data volume.
    """
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dpct"


class Settings(BaseSettings):
    """dpct's configuration, read from ``DPCT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="DPCT_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str = ""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"
    heartbeat_s: float = Field(2.0, gt=0)
    lease_s: float = Field(30.0, gt=0)
    node_down_after_s: float = Field(15.0, gt=0)
    coordinator_tick_s: float = Field(0.5, gt=0)
    retry_backoff_s: float = Field(1.0, ge=0)
    log_max_bytes: int = Field(1_000_000, ge=0)
    """0 never rotates (``RotatingFileHandler``'s meaning)."""
    log_backups: int = Field(3, ge=0)
    store_url: str = ""
    """Where product files live: an fsspec URL or folder (default ``<home>/products``)."""
    outbox_url: str = ""
    """Where pipelines deliver products for the upstream center: a folder or s3:// URL
    (default ``<home>/outbox``); each delivery is a sealed subfolder."""

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _lease_outlasts_heartbeat(self) -> Settings:
        # A lease that expires before the next heartbeat extends it would reap every job.
        if self.lease_s <= self.heartbeat_s:
            raise ValueError(
                f"DPCT_LEASE_S ({self.lease_s:g} s) must be longer than DPCT_HEARTBEAT_S "
                f"({self.heartbeat_s:g} s), best several times"
            )
        return self

    @property
    def url(self) -> str:
        """The database URL: DPCT_DATABASE_URL, or the embedded SQLite file in home."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                # psycopg 3 is the driver we ship; plain URLs select it.
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.home / 'dpct.sqlite3'}"

    @property
    def products_dir(self) -> Path:
        return self.home / "products"

    @property
    def store_root(self) -> str:
        return self.store_url or str(self.products_dir)

    @property
    def outbox(self) -> str:
        return self.outbox_url or str(self.home / "outbox")

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def workflows_dir(self) -> Path:
        return self.home / "workflows"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"
