"""DataSpec: half-open OBMT intervals, aligned splitting, overlap rules, durations."""

from __future__ import annotations

import itertools

import pytest

from dpct.datamodel import NS_PER_DAY, NS_PER_S, DataSpec, day_of, parse_duration_ns

H = 3_600 * NS_PER_S
DAY = 5000
BASE = DAY * NS_PER_DAY


def test_split_aligns_chunks_to_multiples_from_obmt_zero() -> None:
    spec = DataSpec("raw", BASE + 5 * H, BASE + NS_PER_DAY + 7 * H, ccd=3, fov=1)
    parts = spec.split(6 * H)
    assert [(p.start_ns - BASE) // H for p in parts] == [5, 6, 12, 18, 24, 30]
    assert [(p.end_ns - BASE) // H for p in parts] == [6, 12, 18, 24, 30, 31]
    # contiguous, covering exactly the original interval, narrowing kept
    assert parts[0].start_ns == spec.start_ns and parts[-1].end_ns == spec.end_ns
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(parts))
    assert {(p.data_type, p.ccd, p.fov) for p in parts} == {("raw", 3, 1)}
    # inner boundaries fall on multiples of the chunk length
    assert all(p.start_ns % (6 * H) == 0 for p in parts[1:])


def test_split_by_day_keeps_days_and_short_specs_whole() -> None:
    three_days = DataSpec("raw", BASE, BASE + 3 * NS_PER_DAY)
    days = three_days.split(NS_PER_DAY)
    assert [day_of(p.start_ns) for p in days] == [DAY, DAY + 1, DAY + 2]
    assert all(p.duration_ns == NS_PER_DAY for p in days)
    inside = DataSpec("raw", BASE + H, BASE + 2 * H)
    assert inside.split(NS_PER_DAY) == [inside]


@pytest.mark.parametrize("chunk", [0, -H])
def test_split_needs_a_positive_chunk(chunk: int) -> None:
    with pytest.raises(ValueError, match="chunk length must be positive"):
        DataSpec("raw", BASE, BASE + NS_PER_DAY).split(chunk)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (DataSpec("t", 0, 10), DataSpec("t", 10, 20), False),  # half-open: touching
        (DataSpec("t", 0, 10), DataSpec("t", 9, 20), True),
        (DataSpec("t", 0, 10), DataSpec("t", 2, 3), True),  # contained
        (DataSpec("t", 0, 10, ccd=1), DataSpec("t", 0, 10, ccd=2), False),
        (DataSpec("t", 0, 10, ccd=1), DataSpec("t", 5, 15, ccd=1), True),
        (DataSpec("t", 0, 10, ccd=1), DataSpec("t", 0, 10), True),  # None means all CCDs
        (DataSpec("t", 0, 10, fov=1), DataSpec("t", 0, 10, fov=2), False),
        (DataSpec("t", 0, 10, fov=1), DataSpec("t", 0, 10, ccd=4), True),
        (DataSpec("t", 0, 10, ccd=1, fov=1), DataSpec("t", 0, 10, ccd=1, fov=2), False),
        (DataSpec("t", 0, 10, ccd=1), DataSpec("t", 20, 30, ccd=1), False),
    ],
)
def test_overlaps_in_time_ccd_and_fov(a: DataSpec, b: DataSpec, expected: bool) -> None:
    assert a.overlaps(b) is expected
    assert b.overlaps(a) is expected


@pytest.mark.parametrize(("start", "end"), [(BASE, BASE), (BASE + 1, BASE)])
def test_empty_interval_is_an_error_naming_the_type(start: int, end: int) -> None:
    with pytest.raises(ValueError, match=r"DataSpec for 'raw' has an empty interval") as err:
        DataSpec("raw", start, end)
    assert f"[{start}, {end})" in str(err.value)
    assert "end must be after start" in str(err.value)


def test_day_text_and_type_change() -> None:
    spec = DataSpec.day("raw", DAY, ccd=2)
    assert (spec.start_ns, spec.end_ns, spec.ccd) == (BASE, BASE + NS_PER_DAY, 2)
    assert spec.text == f"raw [{BASE}, {BASE + NS_PER_DAY}) day {DAY} ccd=2"
    assert str(DataSpec("raw", BASE, BASE + 2 * NS_PER_DAY, fov=1)).endswith(
        f"days {DAY}-{DAY + 1} fov=1"
    )
    assert DataSpec("raw", BASE, BASE + H).text == f"raw [{BASE}, {BASE + H})"
    assert spec.with_type("cal") == DataSpec("cal", BASE, BASE + NS_PER_DAY, ccd=2)
    assert day_of(BASE + NS_PER_DAY - 1) == DAY and day_of(BASE + NS_PER_DAY) == DAY + 1


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("6h", 6 * H),
        ("1d", NS_PER_DAY),
        ("90s", 90 * NS_PER_S),
        ("1.5h", 90 * 60 * NS_PER_S),
        ("250ms", 250_000_000),
        ("10us", 10_000),
        ("7ns", 7),
        ("5min", 300 * NS_PER_S),
        ("2m", 120 * NS_PER_S),
        (" 3 h ", 3 * H),
        ("123456789", 123_456_789),
        (42, 42),
    ],
)
def test_parse_duration(text: str | int, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["6 hours", "h", "", "1e3s", "-5s", "6H", "abc", "1d2h", "1,5h"])
def test_parse_duration_errors_name_the_text_and_the_units(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read") as err:
        parse_duration_ns(text)
    assert repr(text) in str(err.value)
    assert "ns us ms s m h d" in str(err.value)
