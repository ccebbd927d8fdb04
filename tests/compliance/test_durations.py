"""Durations and deadlines as policies write them, and how month-based ones compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compliance.durations import Deadline, Duration


@pytest.mark.parametrize(
    ("text", "months", "seconds"),
    [
        ("0d", 0, 0),
        ("30d", 0, 30 * 86400),
        ("72h", 0, 72 * 3600),
        ("15min", 0, 900),
        ("2w", 0, 14 * 86400),
        ("6mo", 6, 0),
        ("3y", 36, 0),
    ],
)
def test_durations_parse_and_print_as_written(text: str, months: int, seconds: int) -> None:
    duration = Duration.parse(text)

    assert (duration.months, duration.seconds) == (months, seconds)
    assert str(duration) == text


@pytest.mark.parametrize("text", ["P6M", "6 months", "06mo", "6M", "1.5y", "mo", "1000000d"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        Duration.parse(text)


def test_deadlines_are_positive() -> None:
    assert str(Deadline.parse("3bd")) == "3bd"
    assert Deadline.parse("1mo").human() == "1 month"
    assert Deadline.parse("72h").human() == "72 hours"
    for text in ("0h", "3w", "-1d", "72"):
        with pytest.raises(ValueError, match="bad deadline"):
            Deadline.parse(text)


@pytest.mark.parametrize(
    ("shorter", "longer", "holds"),
    [
        # A 180-day minimum does not meet a 6-month floor: from 1 March, 6 months are 184
        # days. 181 days never exceed 6 months: from 31 August, they are 181 days.
        ("6mo", "180d", False),
        ("6mo", "183d", False),
        ("6mo", "184d", True),
        ("181d", "6mo", True),
        ("182d", "6mo", False),
        ("6mo", "6mo", True),
        ("6mo", "1y", True),
        ("1y", "12mo", True),
        ("12mo", "1y", True),
        ("1y", "365d", False),  # leap years
        ("1y", "366d", True),
        ("200d", "30d", False),
        ("0d", "0d", True),
    ],
)
def test_at_most_holds_only_if_it_holds_from_every_start(
    shorter: str, longer: str, holds: bool
) -> None:
    assert Duration.parse(shorter).at_most(Duration.parse(longer)) is holds


@pytest.mark.parametrize("months", range(0, 30))
def test_month_bounds_hold_for_every_start_in_a_leap_cycle(months: int) -> None:
    duration = Duration(months, "mo")
    start = datetime(2023, 1, 1, tzinfo=UTC)
    spans = set()
    for day in range(4 * 366):
        moment = start + timedelta(days=day)
        spans.add(duration.after(moment) - moment)

    assert duration.shortest() <= min(spans)
    assert max(spans) <= duration.longest()
    if months < 12:  # within a year the tables are exact, not merely safe
        assert min(spans) == duration.shortest()


def test_before_counts_calendar_months_and_clamps_to_month_end() -> None:
    six_months = Duration.parse("6mo")

    assert six_months.before(datetime(2026, 8, 31, 12, tzinfo=UTC)) == datetime(
        2026, 2, 28, 12, tzinfo=UTC
    )
    assert Duration.parse("1y").before(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(
        2027, 2, 28, tzinfo=UTC
    )
    assert Duration.parse("30d").before(datetime(2026, 3, 31, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )


def test_human_wording() -> None:
    assert Duration.parse("1d").human() == "1 day"
    assert Duration.parse("6mo").human() == "6 months"
    assert Duration.parse("2y").human() == "2 years"
