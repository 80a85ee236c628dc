"""What a transfer tells its caller: progress while it runs, a report once it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dpct.storage import TransferFileRow, TransferRow

Clock = Callable[[], float]


class Progress(Protocol):
    """What a pull reports as it goes (the CLI draws a bar over bytes from it)."""

    def begin(self, delivery: str, files: int, nbytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self, row: TransferFileRow) -> None: ...

    def waiting(self, message: str) -> None:
        """The pull waits for another that holds some of its files."""
        ...


class Quiet:
    """The progress of a caller that asked to hear nothing."""

    def begin(self, delivery: str, files: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, row: TransferFileRow) -> None:
        pass

    def waiting(self, message: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class TransferReport:
    """A finished transfer: its row, what became of each file, and how it went.

    ``wire_bytes`` counts what crossed the wire this time (received by a pull, sent by
    a push): a resumed or duplicate file costs less than its size, so this is the figure
    to compare with the link's speed.
    """

    transfer: TransferRow
    files: tuple[TransferFileRow, ...]
    delivery: str
    wire_bytes: int
    seconds: float

    @property
    def id(self) -> int:
        return self.transfer.id

    @property
    def status(self) -> str:
        return self.transfer.status

    def with_status(self, status: str) -> list[TransferFileRow]:
        return [f for f in self.files if f.status == status]
