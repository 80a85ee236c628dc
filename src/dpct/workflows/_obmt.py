"""Wall clock ↔ OBMT, for calendar triggers.

OBMT counts 6-h revolutions since before launch; TCB ≈ J2015.0 + (OBMT − 1717.6256 rev)
/ (1461 rev/yr), good to about a second. One revolution is 21 600 s and a Julian year
is exactly 1461 of them, so OBMT seconds advance with UTC seconds (leap seconds and the
TT−UTC offset of 67.184 s at J2015.0 are below this mapping's accuracy, except that
the offset shifts the zero point, which we include).
"""

from __future__ import annotations

from dpct.datamodel import NS_PER_S

_J2015_UNIX_UTC = 1_420_113_600.0 - 67.184  # 2015-01-01T12:00:00 TT in UTC seconds
_REV_S = 21_600.0
OBMT_ZERO_UNIX = _J2015_UNIX_UTC - 1717.6256 * _REV_S


def obmt_ns_from_unix(unix_s: float) -> int:
    """The OBMT (ns) at a UTC instant given in Unix seconds; ~1 s accurate."""
    return round((unix_s - OBMT_ZERO_UNIX) * NS_PER_S)


def unix_from_obmt_ns(obmt_ns: int) -> float:
    return OBMT_ZERO_UNIX + obmt_ns / NS_PER_S
