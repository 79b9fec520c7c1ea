"""Schedules: EventBridge rate() and cron() expressions (UTC) that invoke a function asynchronously.

A tick is one scheduled fire time. The Scheduler enqueues one event per tick on the async queue, and
records the tick in `schedule_ticks` (PRIMARY KEY (schedule, tick)) in the same transaction, so a tick
fires at most once across restarts and across server processes sharing the control database. Ticks
missed while no server ran follow the schedule's catch_up policy (see docs/schedules.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..core import events
from ..core.app import ScheduleSpec
from ..core.exceptions import ExpressionError, ManifestError, StorageError
from ..core.ports import ScheduleStore, ScheduleWork
from ..manifest.resolve import schedule_specs
from ..manifest.schema import Manifest
from .catalog import ControlOutage
from .schedule_expressions import Cron, ScheduleExpression, parse_expression

log = logging.getLogger("edgefn.schedules")

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
    return parse_schedules(schedule_specs(manifest), file, now)


def parse_schedules(specs: dict[str, ScheduleSpec], file: Path | str, now: float | None = None) -> dict[str, Schedule]:
    """Check every schedule of a locked app (`file` names its manifest in errors): schedules.NAME.KEY and the fix."""
    now = time.time() if now is None else now
    out: dict[str, Schedule] = {}
    for name, cfg in specs.items():
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


def schedule_event(schedule: Schedule, tick: int, request_id: str) -> events.Event:
    """The event a tick delivers: a viewer-request-shaped POST the function can recognise by its URI and headers."""
    request = events.EdgeRequest(
        method="POST",
        uri=SCHEDULE_URI_PREFIX + schedule.name,
        headers={
            SCHEDULE_HEADER: [("X-Edgefn-Schedule", schedule.name)],
            SCHEDULED_TIME_HEADER: [("X-Edgefn-Scheduled-Time", iso_time(tick))],
            "content-type": [("Content-Type", "application/json")],
        },
        body=events.Body(schedule.input.encode()),
    )
    config = events.EventConfig("viewer-request", request_id, schedule.function.partition(":")[0])
    return events.Event(config, request)


def tick_invocation_id(name: str, tick: int) -> str:
    """The same id for the same tick everywhere, so the queue's idempotency window also guards a tick."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{name}@{tick}"))


# --- the scheduler --------------------------------------------------------------------------------




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
    """Fires due ticks of `schedules` onto the queue beside `store`; `run_due(now)` is one evaluation, `run(stop)`
    the server loop."""

    def __init__(
        self, store: ScheduleStore, schedules: dict[str, Schedule], *, clock: Callable[[], float] = time.time,
        late_after_s: float = LATE_AFTER_S, max_catch_up: int = MAX_CATCH_UP,
    ) -> None:
        self.store = store
        self.schedules = schedules
        self.clock = clock
        self.late_after_s = late_after_s
        self.max_catch_up = max_catch_up
        #: told when the control plane fails and answers again (a node's one notice per outage)
        self.outage: ControlOutage | None = None

    def run_due(self, now: float | None = None) -> list[Fired]:
        """Fire every tick due at `now` (default: the clock) that no process has fired yet."""
        now = self.clock() if now is None else now
        fired: list[Fired] = []
        for schedule in self.schedules.values():
            try:
                fired += self._run_schedule(schedule, now)
            except StorageError:
                raise  # the control plane is down: every schedule would fail alike, said once by run()
            except Exception:  # one broken schedule (e.g. its function was deleted) must not stop the others
                log.exception("schedule %s: evaluation failed; retrying on the next pass", schedule.name)
        return fired

    def _state(self, name: str) -> dict[str, Any] | None:
        return self.store.state(name)

    def _needs_reset(self, schedule: Schedule, state: dict[str, Any] | None) -> bool:
        """New, changed, or re-enabled: it starts from now, with no backfill."""
        return state is None or state["expression"] != schedule.expression.text or (schedule.enabled and not state["enabled"])

    def _run_schedule(self, schedule: Schedule, now: float) -> list[Fired]:
        state = self._state(schedule.name)
        if not schedule.enabled:
            if state is not None and state["enabled"]:
                self.store.disable(schedule.name)
            return []
        if not self._needs_reset(schedule, state):
            assert state is not None
            nxt = schedule.expression.next_after(state["checked_through"], state["anchor"])
            if nxt is None or nxt > now:
                return []  # the common case: nothing due, no write
        with self.store.transaction() as work:
            state = work.state(schedule.name)  # again inside the lock: another process may have moved it
            if self._needs_reset(schedule, state):
                anchor = math.floor(now / 60) * 60
                work.reset(schedule.name, schedule.expression.text, anchor, now, state["last_tick"] if state else None)
                log.info("schedule %s: %s starts now; next tick %s", schedule.name, schedule.expression.text, _iso_or_none(schedule.expression.next_after(now, anchor)))
                return []
            assert state is not None
            plan = plan_ticks(schedule.expression, state["anchor"], state["checked_through"], now, schedule.catch_up, self.late_after_s, self.max_catch_up)
            fired = [f for tick in plan.ticks if (f := self._fire(work, schedule, tick, now)) is not None]
            last = max([state["last_tick"] or 0, *(f.tick for f in fired)]) or None
            work.advance(schedule.name, now, last)
            work.prune(schedule.name, now - TICK_RETENTION_S)
        if plan.dropped:
            log.warning(
                "schedule %s: %d missed ticks from %s to %s not fired (catch_up = %s%s)", schedule.name, plan.dropped,
                _iso_or_none(plan.dropped_first), _iso_or_none(plan.dropped_last), schedule.catch_up,
                f", at most {self.max_catch_up} are fired" if schedule.catch_up == "all" else "",
            )
        for f in fired:
            log.info("schedule %s: queued tick %s for %s (request %s)", f.schedule, iso_time(f.tick), schedule.function, f.request_id)
        return fired

    def _fire(self, work: ScheduleWork, schedule: Schedule, tick: int, now: float) -> Fired | None:
        """Record the tick and enqueue its event in the caller's transaction; None if the tick already fired."""
        invocation_id = tick_invocation_id(schedule.name, tick)
        if not work.record_tick(schedule.name, tick, invocation_id, now):
            return None
        payload = json.dumps(events.to_json_document(schedule_event(schedule, tick, invocation_id))).encode()
        # the event's age (max_event_age_s) starts when it is queued, so a caught-up tick is not expired on arrival
        request_id = work.queue.enqueue(schedule.function, payload, invocation_id=invocation_id, source="schedule")
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
                if self.outage is not None and self.schedules:  # without schedules the pass read nothing: it proves nothing
                    self.outage.ok()
            except StorageError as exc:  # ticks wait in the database's state: none is lost, each fires once it answers
                if self.outage is not None:
                    self.outage.failed(exc)
                else:
                    log.error("scheduler pass failed, retrying: %s", exc)
                delay = 1.0
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
