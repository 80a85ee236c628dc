"""DataSpec: what data something covers (a data type, an OBMT interval, a CCD, a FoV)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dpct.errors import BadInput

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|min|h|d)\s*$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "min": 60 * NS_PER_S,
    "h": 3_600 * NS_PER_S,
    "d": NS_PER_DAY,
}


def parse_duration_ns(text: str | int) -> int:
    """Parse ``"6h"``, ``"1d"``, ``"90s"`` or a plain integer of nanoseconds."""
    if isinstance(text, int):
        return text
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    match = _DURATION.match(stripped)
    if not match:
        raise BadInput(
            f"cannot read {text!r} as a duration; use a number with a unit: ns us ms s m h d"
        )
    return round(float(match.group(1)) * _UNIT_NS[match.group(2)])


def day_of(obmt_ns: int) -> int:
    """The OBMT day number (days of 86400 s since OBMT zero) holding ``obmt_ns``."""
    return obmt_ns // NS_PER_DAY


def _clock(ns_of_day: int) -> str:
    s = ns_of_day // NS_PER_S
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True, slots=True)
class DataSpec:
    """A half-open OBMT interval ``[start_ns, end_ns)`` of one data type.

    ``ccd`` and ``fov`` narrow it to one CCD or field of view; ``None`` means all.
    """

    data_type: str
    start_ns: int
    end_ns: int
    ccd: int | None = None
    fov: int | None = None

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise BadInput(
                f"DataSpec for {self.data_type!r} has an empty interval "
                f"[{self.start_ns}, {self.end_ns}): end must be after start"
            )

    @classmethod
    def day(cls, data_type: str, day: int, **narrow: int | None) -> DataSpec:
        return cls(data_type, day * NS_PER_DAY, (day + 1) * NS_PER_DAY, **narrow)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def overlaps(self, other: DataSpec) -> bool:
        """True when the intervals intersect and CCD/FoV narrowing does not exclude it."""
        if self.start_ns >= other.end_ns or other.start_ns >= self.end_ns:
            return False
        if self.ccd is not None and other.ccd is not None and self.ccd != other.ccd:
            return False
        return not (self.fov is not None and other.fov is not None and self.fov != other.fov)

    def with_type(self, data_type: str) -> DataSpec:
        return replace(self, data_type=data_type)

    def split(self, chunk_ns: int) -> list[DataSpec]:
        """Chunks aligned to multiples of ``chunk_ns`` from OBMT zero (days stay days)."""
        if chunk_ns <= 0:
            raise BadInput(f"chunk length must be positive, got {chunk_ns} ns")
        parts = []
        start = self.start_ns
        while start < self.end_ns:
            end = min((start // chunk_ns + 1) * chunk_ns, self.end_ns)
            parts.append(replace(self, start_ns=start, end_ns=end))
            start = end
        return parts

    @property
    def text(self) -> str:
        """The console's DATASPECTEXT: type, interval, and narrowing if any."""
        parts = [f"{self.data_type} [{self.start_ns}, {self.end_ns})"]
        if self.duration_ns % NS_PER_DAY == 0 and self.start_ns % NS_PER_DAY == 0:
            first, days = day_of(self.start_ns), self.duration_ns // NS_PER_DAY
            parts.append(f"day {first}" if days == 1 else f"days {first}-{first + days - 1}")
        if self.ccd is not None:
            parts.append(f"ccd={self.ccd}")
        if self.fov is not None:
            parts.append(f"fov={self.fov}")
        return " ".join(parts)

    @property
    def short(self) -> str:
        """A compact form for tables: days when day-aligned, else the interval."""
        if self.duration_ns % NS_PER_DAY == 0 and self.start_ns % NS_PER_DAY == 0:
            first, days = day_of(self.start_ns), self.duration_ns // NS_PER_DAY
            parts = [
                self.data_type,
                f"day {first}" if days == 1 else f"days {first}-{first + days - 1}",
            ]
        elif day_of(self.start_ns) == day_of(self.end_ns - 1) and self.start_ns % NS_PER_S == 0:
            day = day_of(self.start_ns)
            parts = [
                self.data_type,
                f"day {day} {_clock(self.start_ns - day * NS_PER_DAY)}"
                f"-{_clock(self.end_ns - day * NS_PER_DAY)}",
            ]
        else:
            parts = [f"{self.data_type} [{self.start_ns}, {self.end_ns})"]
        if self.ccd is not None:
            parts.append(f"ccd={self.ccd}")
        if self.fov is not None:
            parts.append(f"fov={self.fov}")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.text


def product_name(spec: DataSpec, tag: str) -> str:
    """``<type>_<start>_<end>[_cN][_fN]_<tag>.parquet``: unique per spec and attempt."""
    name = f"{spec.data_type}_{spec.start_ns}_{spec.end_ns}"
    if spec.ccd is not None:
        name += f"_c{spec.ccd}"
    if spec.fov is not None:
        name += f"_f{spec.fov}"
    return f"{name}_{tag}.parquet"
