"""Durations and deadlines as region policies write them: ``30d``, ``6mo``, ``3bd``.

A duration is a whole number and a unit: ``s``, ``min``, ``h``, ``d``, ``w``, ``mo``
(calendar months) or ``y`` (12 calendar months). Months are calendar months because the
laws count them so (Marco Civil: six months). A month-based and a day-based duration
compare only by what holds from every starting date: ``180d`` is not at least ``6mo``
(August 31 + 6 months is 181 days later), ``184d`` is.

A deadline (a data-subject request, a breach notice) is a positive whole number of
``h``, ``d``, ``bd`` (business days) or ``mo``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

_DURATION = re.compile(r"(0|[1-9][0-9]{0,5})(s|min|h|d|w|mo|y)")
_UNIT_SECONDS: Final = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_MONTHS: Final = {"mo": 1, "y": 12}
_UNIT_WORDS: Final = {
    "s": "second",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
    "bd": "business day",
}
# Fewest and most days that r consecutive calendar months (0 <= r < 12) can span, over
# every starting day (a start on the 31st is clamped to the end of a shorter month).
_SHORTEST_DAYS: Final = (0, 28, 59, 89, 120, 150, 181, 212, 242, 273, 303, 334)
_LONGEST_DAYS: Final = (0, 31, 62, 92, 123, 153, 184, 215, 245, 276, 306, 337)


def _plural(amount: int, unit: str) -> str:
    word = _UNIT_WORDS[unit]
    return f"{amount} {word}" if amount == 1 else f"{amount} {word}s"


@dataclass(frozen=True, slots=True)
class Duration:
    """A retention period: ``amount`` of ``unit`` (``30d``, ``6mo``)."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.fullmatch(text)
        if match is None:
            raise ValueError(
                f"bad duration {text!r}: expected a whole number and a unit "
                "(s, min, h, d, w, mo, y), e.g. 30d or 6mo"
            )
        return cls(int(match[1]), match[2])

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def months(self) -> int:
        return self.amount * _UNIT_MONTHS.get(self.unit, 0)

    @property
    def seconds(self) -> int:
        return self.amount * _UNIT_SECONDS.get(self.unit, 0)

    @property
    def is_zero(self) -> bool:
        return self.amount == 0

    def shortest(self) -> timedelta:
        """The least time this duration can span, whatever day it starts on."""
        years, rest = divmod(self.months, 12)
        return timedelta(days=365 * years + _SHORTEST_DAYS[rest], seconds=self.seconds)

    def longest(self) -> timedelta:
        """The most time this duration can span, whatever day it starts on."""
        years, rest = divmod(self.months, 12)
        return timedelta(days=366 * years + _LONGEST_DAYS[rest], seconds=self.seconds)

    def at_most(self, other: Duration) -> bool:
        """Whether this duration is <= ``other`` from every starting date.

        Two month-based durations compare by months (6mo <= 1y always); otherwise the
        longest this one can span must not exceed the shortest ``other`` can.
        """
        if self.unit in _UNIT_MONTHS and other.unit in _UNIT_MONTHS:
            return self.months <= other.months
        return self.longest() <= other.shortest()

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this duration, counting calendar months."""
        return _add_months(moment, -self.months) - timedelta(seconds=self.seconds)

    def after(self, moment: datetime) -> datetime:
        """``moment`` plus this duration, counting calendar months."""
        return _add_months(moment, self.months) + timedelta(seconds=self.seconds)

    def human(self) -> str:
        return _plural(self.amount, self.unit)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


_DEADLINE = re.compile(r"([1-9][0-9]{0,4})(h|d|bd|mo)")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A time limit to act within: ``72h``, ``30d``, ``3bd`` (business days), ``1mo``."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Deadline:
        match = _DEADLINE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"bad deadline {text!r}: expected a positive whole number and a unit "
                "(h, d, bd for business days, mo), e.g. 72h or 3bd"
            )
        return cls(int(match[1]), match[2])

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def after(self, moment: datetime) -> datetime:
        """When the deadline ends, counted from ``moment``.

        Business days skip Saturdays and Sundays (public holidays differ by country and
        are not counted, so a deadline in business days may end a day early, never late);
        a start on a weekend counts from the next Monday.
        """
        if self.unit == "h":
            return moment + timedelta(hours=self.amount)
        if self.unit == "d":
            return moment + timedelta(days=self.amount)
        if self.unit == "mo":
            return _add_months(moment, self.amount)
        end, left = moment, self.amount
        while left:
            end += timedelta(days=1)
            if end.weekday() < 5:
                left -= 1
        return end

    def human(self) -> str:
        return _plural(self.amount, self.unit)
