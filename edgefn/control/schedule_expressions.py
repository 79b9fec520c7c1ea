"""EventBridge schedule expressions (UTC): rate(N unit) and cron(MIN HOUR DOM MONTH DOW YEAR).

`parse_expression` checks an expression and says which field is wrong and what it allows; `Rate` and
`Cron` compute the next tick after a time and the latest tick at or before it (docs/schedules.md).
"""

from __future__ import annotations

import bisect
import calendar
import math
import re
import time
from dataclasses import dataclass

from ..core.exceptions import ExpressionError

MIN_YEAR, MAX_YEAR = 1970, 2199  # EventBridge's year range


RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
RATE_FIX = "write rate(VALUE UNIT) with a whole VALUE of 1 or more and UNIT minute(s), hour(s) or day(s), e.g. rate(5 minutes)"


@dataclass(frozen=True)
class Rate:
    """rate(N unit): every `period_s` seconds from the schedule's anchor (the minute it was first seen)."""

    text: str
    period_s: int

    def next_after(self, t: float, anchor: int) -> int | None:
        k = max(0, math.floor((t - anchor) / self.period_s)) + 1
        return anchor + k * self.period_s

    def latest_at_or_before(self, t: float, anchor: int) -> int | None:
        k = math.floor((t - anchor) / self.period_s)
        return anchor + k * self.period_s if k >= 1 else None

    def count_between(self, after: float, until: float, anchor: int) -> int:
        """Ticks t with after < t <= until."""

        def k(x: float) -> int:
            return max(0, math.floor((x - anchor) / self.period_s))

        return max(0, k(until) - k(after))


def parse_rate(text: str, inner: str) -> Rate:
    parts = inner.split()
    if len(parts) != 2:
        raise ExpressionError(f"{text}: expected a value and a unit", RATE_FIX)
    value, unit = parts
    if not value.isdigit() or int(value) < 1:
        raise ExpressionError(f"{text}: the value {value!r} is not a whole number of 1 or more", RATE_FIX)
    n = int(value)
    singular = unit.removesuffix("s")
    if singular not in RATE_UNITS:
        raise ExpressionError(f"{text}: unknown unit {unit!r}", "use minute(s), hour(s) or day(s)")
    if n == 1 and unit != singular:
        raise ExpressionError(f"{text}: a value of 1 takes the singular unit", f"write rate(1 {singular})")
    if n > 1 and unit == singular:
        raise ExpressionError(f"{text}: a value above 1 takes the plural unit", f"write rate({n} {singular}s)")
    return Rate(text, n * RATE_UNITS[singular])


@dataclass(frozen=True)
class CronField:
    name: str
    lo: int
    hi: int
    specials: str  # special characters allowed besides digits and names
    names: tuple[str, ...] = ()  # names[i] stands for lo + i

    @property
    def allowed(self) -> str:
        named = f" or {self.names[0]}-{self.names[-1]}" if self.names else ""
        return f"{self.name} allows {self.lo}-{self.hi}{named} and {' '.join(self.specials)}"


MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # EventBridge: 1 = SUN … 7 = SAT
MINUTES = CronField("minutes", 0, 59, ",-*/")
HOURS = CronField("hours", 0, 23, ",-*/")
DAY_OF_MONTH = CronField("day-of-month", 1, 31, ",-*?/LW")
MONTH = CronField("month", 1, 12, ",-*/", MONTH_NAMES)
DAY_OF_WEEK = CronField("day-of-week", 1, 7, ",-*?L#", DAY_NAMES)
YEAR = CronField("year", MIN_YEAR, MAX_YEAR, ",-*/")
CRON_FIELDS = (MINUTES, HOURS, DAY_OF_MONTH, MONTH, DAY_OF_WEEK, YEAR)
CRON_FIX = "write cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), e.g. cron(0 12 * * ? *)"


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _dow(year: int, month: int, day: int) -> int:
    """EventBridge day of week: 1 = Sunday … 7 = Saturday."""
    return (calendar.weekday(year, month, day) + 1) % 7 + 1


@dataclass(frozen=True)
class DayOfMonth:
    days: frozenset[int] = frozenset()
    last: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday: int = 0  # NW: the weekday nearest day N, within the month

    def matches(self, y: int, m: int, d: int) -> bool:
        end = _days_in(y, m)
        if self.last:
            return d == end
        if self.last_weekday:
            dow = _dow(y, m, end)
            return d == end - {1: 2, 7: 1}.get(dow, 0)
        if self.nearest_weekday:
            n = self.nearest_weekday
            if n > end:
                return False
            dow = _dow(y, m, n)
            if dow == 7:  # Saturday: Friday before, or Monday after when N is the 1st
                n = n - 1 if n > 1 else n + 2
            elif dow == 1:  # Sunday: Monday after, or Friday before when N is the last day
                n = n + 1 if n < end else n - 2
            return d == n
        return d in self.days


@dataclass(frozen=True)
class DayOfWeek:
    days: frozenset[int] = frozenset()
    last_of_month: int = 0  # NL: the last day N of the month
    nth: tuple[int, int] = (0, 0)  # N#K: the K-th day N of the month

    def matches(self, y: int, m: int, d: int) -> bool:
        dow = _dow(y, m, d)
        if self.last_of_month:
            return dow == self.last_of_month and d + 7 > _days_in(y, m)
        if self.nth[0]:
            return dow == self.nth[0] and (d - 1) // 7 + 1 == self.nth[1]
        return dow in self.days


def _first_at_least(values: tuple[int, ...], v: int) -> int | None:
    i = bisect.bisect_left(values, v)
    return values[i] if i < len(values) else None


def _last_at_most(values: tuple[int, ...], v: int) -> int | None:
    i = bisect.bisect_right(values, v)
    return values[i - 1] if i > 0 else None


def _epoch(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, 0))


def _fields(t: int) -> tuple[int, int, int, int, int]:
    tm = time.gmtime(t)
    return tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min


@dataclass(frozen=True, repr=False)
class Cron:
    """cron(MIN HOUR DOM MONTH DOW YEAR) in UTC; exactly one of `dom` / `dow` is set (the other was ?)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...]
    dom: DayOfMonth | None
    dow: DayOfWeek | None

    def __repr__(self) -> str:
        return f"Cron({self.text!r})"

    def day_matches(self, y: int, m: int, d: int) -> bool:
        rule = self.dom if self.dom is not None else self.dow
        assert rule is not None
        return rule.matches(y, m, d)

    def next_after(self, t: float, anchor: int = 0) -> int | None:
        """The first tick strictly after `t`, or None if there is none before the end of MAX_YEAR."""
        y, mo, d, h, mi = _fields(math.floor(t / 60) * 60 + 60)
        while True:
            ny = _first_at_least(self.years, y)
            if ny is None:
                return None
            if ny != y:
                y, mo, d, h, mi = ny, 1, 1, 0, 0
            nmo = _first_at_least(self.months, mo)
            if nmo is None:
                y, mo, d, h, mi = y + 1, 1, 1, 0, 0
                continue
            if nmo != mo:
                mo, d, h, mi = nmo, 1, 0, 0
            nh = _first_at_least(self.hours, h) if self.day_matches(y, mo, d) else None
            if nh is not None and nh != h:
                h, mi = nh, 0
            nmi = _first_at_least(self.minutes, mi) if nh is not None else None
            if nmi is None and nh is not None and (later := _first_at_least(self.hours, h + 1)) is not None:
                h, mi = later, 0  # no minute left in this hour: the next allowed hour of the same day
                continue
            if nmi is None:  # nothing left today: the next day
                d += 1
                h = mi = 0
                if d > _days_in(y, mo):
                    y, mo, d = (y + 1, 1, 1) if mo == 12 else (y, mo + 1, 1)
                continue
            return _epoch(y, mo, d, h, nmi)

    def latest_at_or_before(self, t: float, anchor: int = 0) -> int | None:
        """The last tick at or before `t`, or None if there is none since MIN_YEAR."""
        y, mo, d, h, mi = _fields(math.floor(t / 60) * 60)
        while True:
            py = _last_at_most(self.years, y)
            if py is None:
                return None
            if py != y:
                y, mo, d, h, mi = py, 12, 31, 23, 59
            pmo = _last_at_most(self.months, mo)
            if pmo is None:
                y, mo, d, h, mi = y - 1, 12, 31, 23, 59
                continue
            if pmo != mo:
                mo, d, h, mi = pmo, _days_in(y, pmo), 23, 59
            ph = _last_at_most(self.hours, h) if self.day_matches(y, mo, d) else None
            if ph is not None and ph != h:
                h, mi = ph, 59
            pmi = _last_at_most(self.minutes, mi) if ph is not None else None
            if pmi is None and ph is not None and (earlier := _last_at_most(self.hours, h - 1)) is not None:
                h, mi = earlier, 59
                continue
            if pmi is None:  # nothing earlier today: the day before
                d -= 1
                h, mi = 23, 59
                if d < 1:
                    y, mo = (y - 1, 12) if mo == 1 else (y, mo - 1)
                    d = _days_in(y, mo)
                continue
            return _epoch(y, mo, d, h, pmi)

    def count_between(self, after: float, until: float, anchor: int = 0) -> int:
        """Ticks t with after < t <= until, counted a day at a time."""
        first, last = math.floor(after / 60) * 60 + 60, math.floor(until / 60) * 60
        if first > last:
            return 0
        per_day = len(self.hours) * len(self.minutes)
        count = 0
        day = first - first % 86400
        while day <= last:
            y, mo, d, _, _ = _fields(day)
            if y in self.years and mo in self.months and self.day_matches(y, mo, d):
                if first <= day and day + 86340 <= last:
                    count += per_day
                else:
                    count += sum(1 for h in self.hours for m in self.minutes if first <= day + h * 3600 + m * 60 <= last)
            day += 86400
        return count


def _field_error(text: str, spec: CronField, problem: str) -> ExpressionError:
    return ExpressionError(f"{text}: {spec.name} field: {problem}", spec.allowed)


def _value(item: str, spec: CronField, text: str) -> int:
    upper = item.upper()
    if upper in spec.names:
        return spec.lo + spec.names.index(upper)
    if not item.isdigit():
        raise _field_error(text, spec, f"{item!r} is not a number" + (" or a name" if spec.names else ""))
    v = int(item)
    if not spec.lo <= v <= spec.hi:
        raise _field_error(text, spec, f"{v} is out of range")
    return v


def _values(field: str, spec: CronField, text: str) -> tuple[int, ...]:
    """A field of , - * / items: the sorted values it allows."""
    out: set[int] = set()
    for item in field.split(","):
        if not item:
            raise _field_error(text, spec, f"empty item in {field!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if "/" not in spec.specials:
                raise _field_error(text, spec, "'/' is not allowed")
            if not step_text.isdigit() or int(step_text) < 1:
                raise _field_error(text, spec, f"the step in {item!r} must be a whole number of 1 or more")
            step = int(step_text)
        if base == "*":
            lo, hi = spec.lo, spec.hi
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _value(a, spec, text), _value(b, spec, text)
            if lo > hi:
                raise _field_error(text, spec, f"the range {base!r} goes from high to low (write it as a list of two ranges)")
        else:
            lo = _value(base, spec, text)
            hi = spec.hi if slash else lo  # N/S: from N every S to the end of the range
        out.update(range(lo, hi + 1, step))
    return tuple(sorted(out))


def _day_of_month(field: str, text: str) -> DayOfMonth:
    upper = field.upper()
    if upper == "L":
        return DayOfMonth(last=True)
    if upper == "LW":
        return DayOfMonth(last_weekday=True)
    if upper.endswith("W"):
        return DayOfMonth(nearest_weekday=_value(upper[:-1], DAY_OF_MONTH, text))
    if "L" in upper or "W" in upper:
        raise _field_error(text, DAY_OF_MONTH, f"{field!r}: use L, LW or NW (the weekday nearest day N) as the whole field")
    return DayOfMonth(days=frozenset(_values(field, DAY_OF_MONTH, text)))


def _day_of_week(field: str, text: str) -> DayOfWeek:
    upper = field.upper()
    if upper == "L":
        return DayOfWeek(days=frozenset({7}))  # the last day of the week: Saturday
    if last := re.fullmatch(r"([0-9A-Z]+)L", upper):  # NL: the last day N of the month (no day name ends in L)
        return DayOfWeek(last_of_month=_value(last.group(1), DAY_OF_WEEK, text))
    if nth := re.fullmatch(r"([0-9A-Z]+)#([0-9]+)", upper):
        if nth.group(2) not in ("1", "2", "3", "4", "5"):
            raise _field_error(text, DAY_OF_WEEK, f"{field!r}: the number after # must be 1 to 5")
        return DayOfWeek(nth=(_value(nth.group(1), DAY_OF_WEEK, text), int(nth.group(2))))
    if "L" in upper or "#" in upper:
        raise _field_error(text, DAY_OF_WEEK, f"{field!r}: use L, NL (the last day N of the month) or N#K (the K-th day N) as the whole field")
    return DayOfWeek(days=frozenset(_values(field, DAY_OF_WEEK, text)))


def parse_cron(text: str, inner: str) -> Cron:
    parts = inner.split()
    if len(parts) != 6:
        raise ExpressionError(f"{text}: {len(parts)} fields, cron() needs 6", CRON_FIX)
    minute, hour, dom, month, dow, year = parts
    for field, spec in zip(parts, CRON_FIELDS, strict=False):
        if "?" in field and (field != "?" or "?" not in spec.specials):
            problem = "'?' must be the whole field" if "?" in spec.specials else "'?' is only allowed in day-of-month or day-of-week"
            raise _field_error(text, spec, problem)
        unnamed = re.sub("|".join(spec.names) or "^$", "", field.upper())  # JUL and WED are names, not L or W
        for char, where in (("L", "day-of-month or day-of-week"), ("W", "day-of-month"), ("#", "day-of-week")):
            if char in unnamed and char not in spec.specials:
                raise _field_error(text, spec, f"{char!r} is only allowed in {where}")
    if (dom == "?") == (dow == "?"):
        which = "both are ?" if dom == "?" else "neither is ?"
        raise ExpressionError(
            f"{text}: exactly one of day-of-month and day-of-week must be ? ({which})",
            "write ? in the one you do not use, e.g. cron(0 12 * * ? *) or cron(0 12 ? * MON-FRI *)",
        )
    return Cron(
        text=text,
        minutes=_values(minute, MINUTES, text),
        hours=_values(hour, HOURS, text),
        months=_values(month, MONTH, text),
        years=_values(year, YEAR, text),
        dom=None if dom == "?" else _day_of_month(dom, text),
        dow=None if dow == "?" else _day_of_week(dow, text),
    )


ScheduleExpression = Rate | Cron
_EXPRESSION = re.compile(r"\s*(rate|cron)\((.*)\)\s*", re.DOTALL)


def parse_expression(text: str) -> ScheduleExpression:
    """Parse an EventBridge rate() or cron() expression; ExpressionError says which part is wrong and what is allowed."""
    found = _EXPRESSION.fullmatch(text)
    if not found:
        raise ExpressionError(f"{text!r} is not a rate() or cron() expression", "write rate(5 minutes) or cron(0 12 * * ? *)")
    kind, inner = found.groups()
    return parse_rate(text, inner) if kind == "rate" else parse_cron(text, inner)
