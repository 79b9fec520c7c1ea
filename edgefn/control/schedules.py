"""Schedules: EventBridge rate() and cron() expressions (UTC) that invoke a function asynchronously.

A tick is one scheduled fire time. The Scheduler enqueues one event per tick on the async queue, and
records the tick in `schedule_ticks` (PRIMARY KEY (schedule, tick)) in the same transaction, so a tick
fires at most once across restarts and across server processes sharing the control database. Ticks
missed while no server ran follow the schedule's catch_up policy (see docs/schedules.md).
"""

from __future__ import annotations

import asyncio
import bisect
import calendar
import json
import logging
import math
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TextIO

from ..manifest.load import ManifestError, load_manifest
from ..manifest.schema import Manifest
from ..runtime import abi
from ..runtime.errors import EdgefnError
from .deploy import registry_path
from .queue import EventQueue, SqliteEventQueue
from .sqlite import Database

log = logging.getLogger("edgefn.schedules")

MIN_YEAR, MAX_YEAR = 1970, 2199  # EventBridge's year range
SCHEDULE_URI_PREFIX = "/_edgefn/schedule/"
SCHEDULE_HEADER = "x-edgefn-schedule"
SCHEDULED_TIME_HEADER = "x-edgefn-scheduled-time"
#: a tick this much older than "now" when first seen was missed (no server ran): catch_up decides
LATE_AFTER_S = 60.0
#: catch_up = "all" enqueues at most this many missed ticks (the latest ones); older ones are logged as dropped
MAX_CATCH_UP = 100
#: fired ticks are kept this long for inspection; the cursor alone already prevents refiring older ones
TICK_RETENTION_S = 7 * 86400
#: longest sleep of the loop between evaluations (bounds the delay after a clock jump or a config change)
MAX_SLEEP_S = 1.0
#: names uuid5 invocation ids, so one tick always has the same id
TICK_NAMESPACE = uuid.UUID("6f1d7c3e-2b0a-4c8e-9a57-3d5be1f0c201")


class ExpressionError(EdgefnError):
    """A rate() or cron() expression that does not parse: `problem` says what is wrong, `fix` what is allowed."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})")


# --- expressions ----------------------------------------------------------------------------------

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
    for field, spec in zip(parts, CRON_FIELDS):
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


# --- the schedules of a manifest ------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A checked [schedules.NAME] table."""

    name: str
    function: str
    expression: ScheduleExpression
    input: str
    catch_up: str
    enabled: bool


def load_schedules(manifest: Manifest, file: Path | str, now: float | None = None) -> dict[str, Schedule]:
    """Check every schedule of `manifest` (at server start): ManifestError names schedules.NAME.KEY and the fix."""
    now = time.time() if now is None else now
    out: dict[str, Schedule] = {}
    for name, cfg in manifest.schedules.items():
        key = f"schedules.{name}"
        try:
            expression = parse_expression(cfg.expression)
        except ExpressionError as exc:
            raise ManifestError(file, f"{key}.expression", exc.problem, exc.fix) from None
        if isinstance(expression, Cron) and cfg.enabled and expression.next_after(now) is None:
            raise ManifestError(file, f"{key}.expression", f"{cfg.expression} never fires after now", "check the day, month and year fields, or set enabled = false")
        try:
            json.loads(cfg.input)
        except json.JSONDecodeError as exc:
            raise ManifestError(file, f"{key}.input", f"not valid JSON: {exc}", 'write a JSON document, e.g. input = \'{"job": "report"}\'') from None
        out[name] = Schedule(name, cfg.function, expression, cfg.input, cfg.catch_up, cfg.enabled)
    return out


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_event(schedule: Schedule, tick: int, request_id: str) -> abi.Event:
    """The event a tick delivers: a viewer-request-shaped POST the function can recognise by its URI and headers."""
    request = abi.EdgeRequest(
        method="POST",
        uri=SCHEDULE_URI_PREFIX + schedule.name,
        headers={
            SCHEDULE_HEADER: [("X-Edgefn-Schedule", schedule.name)],
            SCHEDULED_TIME_HEADER: [("X-Edgefn-Scheduled-Time", iso_time(tick))],
            "content-type": [("Content-Type", "application/json")],
        },
        body=abi.Body(schedule.input.encode()),
    )
    config = abi.EventConfig("viewer-request", request_id, schedule.function.partition(":")[0])
    return abi.Event(config, request)


def tick_invocation_id(name: str, tick: int) -> str:
    """The same id for the same tick everywhere, so the queue's idempotency window also guards a tick."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{name}@{tick}"))


# --- the scheduler --------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_state (
    schedule TEXT PRIMARY KEY,
    expression TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    anchor INTEGER NOT NULL,          -- epoch s: where rate() ticks count from
    checked_through REAL NOT NULL,    -- epoch s: every tick at or before this has been handled
    last_tick INTEGER                 -- epoch s: the last tick that fired
);
CREATE TABLE IF NOT EXISTS schedule_ticks (
    schedule TEXT NOT NULL,
    tick INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    fired_at REAL NOT NULL,
    PRIMARY KEY (schedule, tick)
)
"""


@dataclass(frozen=True)
class Plan:
    """What one evaluation of a schedule fires: the ticks, and the missed ticks it drops (catch_up)."""

    ticks: list[int]
    dropped: int = 0
    dropped_first: int | None = None
    dropped_last: int | None = None


def plan_ticks(
    expression: ScheduleExpression, anchor: int, checked_through: float, now: float, catch_up: str,
    late_after_s: float = LATE_AFTER_S, max_catch_up: int = MAX_CATCH_UP,
) -> Plan:
    """The ticks in (checked_through, now] to fire: on-time ones always, missed ones (older than late_after_s) per catch_up."""
    late_until = now - late_after_s
    on_time: list[int] = []
    t = expression.next_after(max(checked_through, late_until), anchor)
    while t is not None and t <= now:
        on_time.append(t)
        t = expression.next_after(t, anchor)
    if late_until <= checked_through or catch_up == "skip":
        missed_count = 0 if late_until <= checked_through else expression.count_between(checked_through, late_until, anchor)
        first = expression.next_after(checked_through, anchor) if missed_count else None
        last = expression.latest_at_or_before(late_until, anchor) if missed_count else None
        return Plan(on_time, missed_count, first, last)
    keep = 1 if catch_up == "once" else max_catch_up
    missed: list[int] = []
    t = expression.latest_at_or_before(late_until, anchor)
    while t is not None and t > checked_through and len(missed) < keep:
        missed.append(t)
        t = expression.latest_at_or_before(t - 1, anchor)
    if t is None or t <= checked_through:
        return Plan(sorted(missed) + on_time)
    dropped = expression.count_between(checked_through, t, anchor)
    return Plan(sorted(missed) + on_time, dropped, expression.next_after(checked_through, anchor), t)


@dataclass(frozen=True)
class Fired:
    schedule: str
    tick: int
    invocation_id: str
    request_id: str  # the queue's id of the event


@dataclass(frozen=True)
class ScheduleStatus:
    """One row of `edgefn schedules list`."""

    name: str
    function: str
    expression: str
    catch_up: str
    enabled: bool
    last_tick: int | None
    next_tick: int | None


class Scheduler:
    """Fires due ticks of `schedules` onto `queue`; `run_due(now)` is one evaluation, `run(stop)` the server loop."""

    def __init__(
        self, db: Database, schedules: dict[str, Schedule], queue: EventQueue, *, clock: Callable[[], float] = time.time,
        late_after_s: float = LATE_AFTER_S, max_catch_up: int = MAX_CATCH_UP,
    ) -> None:
        self.db = db
        self.schedules = schedules
        self.queue = queue
        self.clock = clock
        self.late_after_s = late_after_s
        self.max_catch_up = max_catch_up
        db.ensure_schema("schedules", SCHEMA)

    def run_due(self, now: float | None = None) -> list[Fired]:
        """Fire every tick due at `now` (default: the clock) that no process has fired yet."""
        now = self.clock() if now is None else now
        fired: list[Fired] = []
        for schedule in self.schedules.values():
            try:
                fired += self._run_schedule(schedule, now)
            except Exception:  # one broken schedule (e.g. its function was deleted) must not stop the others
                log.exception("schedule %s: evaluation failed; retrying on the next pass", schedule.name)
        return fired

    def _state(self, name: str) -> dict | None:
        rows = self.db.query("SELECT * FROM schedule_state WHERE schedule = ?", (name,))
        return dict(rows[0]) if rows else None

    def _needs_reset(self, schedule: Schedule, state: dict | None) -> bool:
        """New, changed, or re-enabled: it starts from now, with no backfill."""
        return state is None or state["expression"] != schedule.expression.text or (schedule.enabled and not state["enabled"])

    def _run_schedule(self, schedule: Schedule, now: float) -> list[Fired]:
        state = self._state(schedule.name)
        if not schedule.enabled:
            if state is not None and state["enabled"]:
                with self.db.transaction() as conn:
                    conn.execute("UPDATE schedule_state SET enabled = 0 WHERE schedule = ?", (schedule.name,))
            return []
        if not self._needs_reset(schedule, state):
            assert state is not None
            nxt = schedule.expression.next_after(state["checked_through"], state["anchor"])
            if nxt is None or nxt > now:
                return []  # the common case: nothing due, no write
        with self.db.transaction() as conn:
            state = self._state(schedule.name)  # again inside the lock: another process may have moved it
            if self._needs_reset(schedule, state):
                anchor = math.floor(now / 60) * 60
                conn.execute(
                    "INSERT OR REPLACE INTO schedule_state (schedule, expression, enabled, anchor, checked_through, last_tick) VALUES (?, ?, 1, ?, ?, ?)",
                    (schedule.name, schedule.expression.text, anchor, now, state["last_tick"] if state else None),
                )
                log.info("schedule %s: %s starts now; next tick %s", schedule.name, schedule.expression.text, _iso_or_none(schedule.expression.next_after(now, anchor)))
                return []
            assert state is not None
            plan = plan_ticks(schedule.expression, state["anchor"], state["checked_through"], now, schedule.catch_up, self.late_after_s, self.max_catch_up)
            fired = [f for tick in plan.ticks if (f := self._fire(conn, schedule, tick, now)) is not None]
            last = max([state["last_tick"] or 0, *(f.tick for f in fired)]) or None
            conn.execute("UPDATE schedule_state SET checked_through = ?, last_tick = ? WHERE schedule = ?", (now, last, schedule.name))
            conn.execute("DELETE FROM schedule_ticks WHERE schedule = ? AND tick < ?", (schedule.name, now - TICK_RETENTION_S))
        if plan.dropped:
            log.warning(
                "schedule %s: %d missed ticks from %s to %s not fired (catch_up = %s%s)", schedule.name, plan.dropped,
                _iso_or_none(plan.dropped_first), _iso_or_none(plan.dropped_last), schedule.catch_up,
                f", at most {self.max_catch_up} are fired" if schedule.catch_up == "all" else "",
            )
        for f in fired:
            log.info("schedule %s: queued tick %s for %s (request %s)", f.schedule, iso_time(f.tick), schedule.function, f.request_id)
        return fired

    def _fire(self, conn: sqlite3.Connection, schedule: Schedule, tick: int, now: float) -> Fired | None:
        """Record the tick and enqueue its event in the caller's transaction; None if the tick already fired."""
        invocation_id = tick_invocation_id(schedule.name, tick)
        cur = conn.execute(
            "INSERT OR IGNORE INTO schedule_ticks (schedule, tick, invocation_id, fired_at) VALUES (?, ?, ?, ?)",
            (schedule.name, tick, invocation_id, now),
        )
        if cur.rowcount == 0:
            return None
        payload = json.dumps(abi.to_json_document(schedule_event(schedule, tick, invocation_id))).encode()
        # the event's age (max_event_age_s) starts when it is queued, so a caught-up tick is not expired on arrival
        request_id = self.queue.enqueue(schedule.function, payload, invocation_id=invocation_id, source="schedule", conn=conn)
        return Fired(schedule.name, tick, invocation_id, request_id)

    def next_wake(self, now: float) -> float:
        """Seconds to sleep before the next evaluation: until the earliest next tick, at most MAX_SLEEP_S."""
        soonest = MAX_SLEEP_S
        for schedule in self.schedules.values():
            state = self._state(schedule.name)
            if schedule.enabled and state is not None and not self._needs_reset(schedule, state):
                nxt = schedule.expression.next_after(state["checked_through"], state["anchor"])
                if nxt is not None:
                    soonest = min(soonest, max(0.0, nxt - now))
        return soonest

    async def run(self, stop: asyncio.Event) -> None:
        """The server loop: evaluate, sleep until the next tick (at most MAX_SLEEP_S), until `stop` is set."""
        while not stop.is_set():
            now = self.clock()
            try:
                await asyncio.to_thread(self.run_due, now)
                delay = await asyncio.to_thread(self.next_wake, self.clock())
            except Exception:
                log.exception("scheduler pass failed")
                delay = MAX_SLEEP_S
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.01))
            except asyncio.TimeoutError:
                pass

    def status(self, now: float | None = None) -> list[ScheduleStatus]:
        now = self.clock() if now is None else now
        out = []
        for s in sorted(self.schedules.values(), key=lambda s: s.name):
            state = self._state(s.name)
            if state is None or self._needs_reset(s, state):
                anchor, after = math.floor(now / 60) * 60, now
            else:
                anchor, after = state["anchor"], max(state["checked_through"], now)
            nxt = s.expression.next_after(after, anchor) if s.enabled else None
            out.append(ScheduleStatus(s.name, s.function, s.expression.text, s.catch_up, s.enabled, state["last_tick"] if state else None, nxt))
        return out


def _iso_or_none(t: float | None) -> str:
    return iso_time(t) if t is not None else "never"


def schedules_list_command(config: Path, as_json: bool, stdout: TextIO) -> int:
    """`edgefn schedules list`: each schedule with the last tick fired (from the control database) and the next one."""
    manifest = load_manifest(config)
    schedules = load_schedules(manifest, config)
    db = Database(registry_path(config, manifest))
    rows = Scheduler(db, schedules, SqliteEventQueue(db)).status()
    if as_json:
        docs = [
            {"name": r.name, "function": r.function, "expression": r.expression, "catch_up": r.catch_up, "enabled": r.enabled,
             "last_tick": r.last_tick and iso_time(r.last_tick), "next_tick": r.next_tick and iso_time(r.next_tick)}
            for r in rows
        ]
        print(json.dumps(docs, indent=2), file=stdout)
        return 0
    if not rows:
        print(f"no schedules in {config} (add [schedules.NAME] tables)", file=stdout)
    for r in rows:
        nxt = iso_time(r.next_tick) if r.next_tick else ("paused" if not r.enabled else "never")
        last = iso_time(r.last_tick) if r.last_tick else "never"
        print(f"{r.name:24} {r.expression:32} -> {r.function:20} catch_up={r.catch_up:4}  last {last}  next {nxt}", file=stdout)
    return 0
