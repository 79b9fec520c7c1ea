"""Schedules: EventBridge rate()/cron() parsing and next-fire times, the Scheduler on a real control database
and the real async queue (controlled clock, no sleeping), and a real `edgefn serve` delivering a due tick."""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import time
from pathlib import Path

import pytest

from edgefn import cli
from edgefn.control.schedule_expressions import Cron, Rate, parse_expression
from edgefn.control.schedules import (
    Schedule,
    Scheduler,
    iso_time,
    load_schedules,
    tick_invocation_id,
)
from edgefn.control.store.queue import SqlEventQueue
from edgefn.control.store.schedules import SqlScheduleStore
from edgefn.control.store.sqlite import SqliteDatabase
from edgefn.core import events
from edgefn.core.exceptions import ExpressionError, ManifestError
from edgefn.manifest.load import load_manifest


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s))


def fires(expression: str, start: int, n: int, anchor: int = 0) -> list[str]:
    expr = parse_expression(expression)
    out, t = [], start
    for _ in range(n):
        nxt = expr.next_after(t, anchor)
        assert nxt is not None
        out.append(iso_time(nxt))
        t = nxt
    return out


# --- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("every 5 minutes", "'every 5 minutes' is not a rate() or cron() expression (write rate(5 minutes) or cron(0 12 * * ? *))"),
        ("rate(0 minutes)", "rate(0 minutes): the value '0' is not a whole number of 1 or more"),
        ("rate(1 minutes)", "rate(1 minutes): a value of 1 takes the singular unit (write rate(1 minute))"),
        ("rate(5 minute)", "rate(5 minute): a value above 1 takes the plural unit (write rate(5 minutes))"),
        ("rate(5 weeks)", "rate(5 weeks): unknown unit 'weeks' (use minute(s), hour(s) or day(s))"),
        ("rate(5)", "rate(5): expected a value and a unit"),
        ("cron(0 12 * * ?)", "cron(0 12 * * ?): 5 fields, cron() needs 6 (write cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)"),
        ("cron(0 25 * * ? *)", "cron(0 25 * * ? *): hours field: 25 is out of range (hours allows 0-23 and , - * /)"),
        ("cron(60 1 * * ? *)", "cron(60 1 * * ? *): minutes field: 60 is out of range (minutes allows 0-59 and , - * /)"),
        ("cron(0 12 * * * *)", "cron(0 12 * * * *): exactly one of day-of-month and day-of-week must be ? (neither is ?)"),
        ("cron(0 12 ? * ? *)", "cron(0 12 ? * ? *): exactly one of day-of-month and day-of-week must be ? (both are ?)"),
        ("cron(0 12 ? * MON-FRI/2 *)", "cron(0 12 ? * MON-FRI/2 *): day-of-week field: '/' is not allowed (day-of-week allows 1-7 or SUN-SAT and , - * ? L #)"),
        ("cron(0 12 ? * FRI-MON *)", "day-of-week field: the range 'FRI-MON' goes from high to low"),
        ("cron(0 12 ? * 2#6 *)", "day-of-week field: '2#6': the number after # must be 1 to 5"),
        ("cron(0 12 ? * MON,L *)", "day-of-week field: 'MON,L': use L, NL (the last day N of the month) or N#K (the K-th day N) as the whole field"),
        ("cron(0 12 1,L * ? *)", "day-of-month field: '1,L': use L, LW or NW (the weekday nearest day N) as the whole field (day-of-month allows 1-31 and , - * ? / L W)"),
        ("cron(0 12 ? * XYZ *)", "day-of-week field: 'XYZ' is not a number or a name"),
        ("cron(0 12 ? * 0 *)", "day-of-week field: 0 is out of range"),
        ("cron(0 12 * * ? 1969)", "year field: 1969 is out of range (year allows 1970-2199 and , - * /)"),
        ("cron(0 ? * * ? *)", "hours field: '?' is only allowed in day-of-month or day-of-week"),
        ("cron(0 L * * ? *)", "hours field: 'L' is only allowed in day-of-month or day-of-week"),
        ("cron(0 12 * 2W ? *)", "month field: 'W' is only allowed in day-of-month (month allows 1-12 or JAN-DEC and , - * /)"),
        ("cron(*/0 * * * ? *)", "minutes field: the step in '*/0' must be a whole number of 1 or more"),
        ("cron(1,,2 * * * ? *)", "minutes field: empty item in '1,,2'"),
        ("cron(0 12 ? FOO * *)", "month field: 'FOO' is not a number or a name (month allows 1-12 or JAN-DEC"),
    ],
)
def test_invalid_expressions_say_which_field_and_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_expression(text)
    assert message in str(caught.value)


def test_valid_expressions_parse_to_their_values() -> None:
    assert parse_expression("rate(1 minute)") == Rate("rate(1 minute)", 60)
    assert parse_expression("rate(3 hours)") == Rate("rate(3 hours)", 3 * 3600)
    assert parse_expression("rate(2 days)") == Rate("rate(2 days)", 2 * 86400)
    cron = parse_expression("cron(0/15 8-10,22 ? JUL-AUG mon-fri 2026-2030/2)")
    assert isinstance(cron, Cron)
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == (8, 9, 10, 22)
    assert cron.months == (7, 8)
    assert cron.years == (2026, 2028, 2030)
    assert cron.dom is None and cron.dow is not None and cron.dow.days == frozenset({2, 3, 4, 5, 6})
    assert parse_expression("cron(5 * 1/10 * ? *)").dom.days == frozenset({1, 11, 21, 31})  # type: ignore[union-attr]
    assert parse_expression("cron(0 0 ? JUL WED *)").dow.days == frozenset({4})  # type: ignore[union-attr]  # JUL/WED are names, not L/W


def test_manifest_errors_name_the_schedule_key_and_the_fix(tmp_path: Path) -> None:
    manifest_path = tmp_path / "edgefn.toml"

    def problem(schedule: str) -> ManifestError:
        manifest_path.write_text(f'[functions.job]\nsource = "job.c"\n\n[schedules.nightly]\nfunction = "job"\n{schedule}\n')
        with pytest.raises(ManifestError) as caught:
            load_schedules(load_manifest(manifest_path), manifest_path)
        return caught.value

    err = problem('expression = "cron(0 24 * * ? *)"')
    assert err.key == "schedules.nightly.expression"
    assert str(err) == f"{manifest_path}: schedules.nightly.expression: cron(0 24 * * ? *): hours field: 24 is out of range\n  fix: hours allows 0-23 and , - * /"
    err = problem('expression = "cron(0 0 1 1 ? 2001)"')
    assert (err.key, err.problem) == ("schedules.nightly.expression", "cron(0 0 1 1 ? 2001) never fires after now")
    err = problem('expression = "rate(1 hour)"\ninput = "{not json"')
    assert err.key == "schedules.nightly.input" and err.problem.startswith("not valid JSON")
    manifest_path.write_text('[functions.job]\nsource = "job.c"\n\n[schedules.nightly]\nfunction = "job"\nexpression = "cron(0 3 * * ? *)"\ncatch_up = "all"\n')
    (s,) = load_schedules(load_manifest(manifest_path), manifest_path).values()
    assert (s.name, s.function, s.catch_up, s.enabled, s.input) == ("nightly", "job", "all", True, "{}")


# --- next fire times -------------------------------------------------------------------------------


def test_last_day_of_month_across_leap_and_common_years() -> None:
    assert fires("cron(0 0 L * ? *)", utc(2024, 1, 15), 4) == ["2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z"]
    assert fires("cron(30 23 L 2 ? *)", utc(2023, 1, 1), 3) == ["2023-02-28T23:30:00Z", "2024-02-29T23:30:00Z", "2025-02-28T23:30:00Z"]
    # day 31 only exists in seven months; Feb 29 only in leap years (2100 is not one)
    assert fires("cron(0 12 31 * ? *)", utc(2024, 1, 31, 13), 3) == ["2024-03-31T12:00:00Z", "2024-05-31T12:00:00Z", "2024-07-31T12:00:00Z"]
    assert fires("cron(0 0 29 FEB ? *)", utc(2096, 3, 1), 2) == ["2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"]


def test_days_of_week_nth_last_and_weekday_forms() -> None:
    # 2024-02-01 is a Thursday
    assert fires("cron(0 9 ? * MON-FRI *)", utc(2024, 2, 2, 10), 3) == ["2024-02-05T09:00:00Z", "2024-02-06T09:00:00Z", "2024-02-07T09:00:00Z"]
    assert fires("cron(0 9 ? * 1,7 *)", utc(2024, 2, 1), 3) == ["2024-02-03T09:00:00Z", "2024-02-04T09:00:00Z", "2024-02-10T09:00:00Z"]  # 1 = SUN, 7 = SAT
    assert fires("cron(0 0 ? * 3#2 *)", utc(2024, 2, 1), 2) == ["2024-02-13T00:00:00Z", "2024-03-12T00:00:00Z"]  # second Tuesday
    assert fires("cron(0 0 ? * 6L *)", utc(2024, 2, 1), 3) == ["2024-02-23T00:00:00Z", "2024-03-29T00:00:00Z", "2024-04-26T00:00:00Z"]  # last Friday
    assert fires("cron(0 0 ? * L *)", utc(2024, 2, 1), 2) == ["2024-02-03T00:00:00Z", "2024-02-10T00:00:00Z"]  # L alone: Saturday
    assert fires("cron(0 0 LW * ? *)", utc(2024, 3, 1), 2) == ["2024-03-29T00:00:00Z", "2024-04-30T00:00:00Z"]  # Mar 31 is a Sunday
    # nearest weekday, never crossing the month: Jun 1 2024 is a Saturday -> Mon 3; Sep 15 2024 a Sunday -> Mon 16
    assert fires("cron(0 0 1W JUN ? *)", utc(2024, 1, 1), 1) == ["2024-06-03T00:00:00Z"]
    assert fires("cron(0 0 15W SEP ? *)", utc(2024, 1, 1), 1) == ["2024-09-16T00:00:00Z"]
    assert fires("cron(0 0 31W AUG ? *)", utc(2024, 1, 1), 1) == ["2024-08-30T00:00:00Z"]  # Sat 31 -> Fri 30


def test_rollovers_steps_and_the_end_of_the_year_range() -> None:
    assert fires("cron(*/20 22-23 * * ? *)", utc(2024, 12, 31, 23, 30), 3) == ["2024-12-31T23:40:00Z", "2025-01-01T22:00:00Z", "2025-01-01T22:20:00Z"]
    assert fires("cron(0 0 1 1 ? *)", utc(2024, 1, 1), 1) == ["2025-01-01T00:00:00Z"]  # strictly after
    assert parse_expression("cron(0 0 1 1 ? 2199)").next_after(utc(2199, 1, 1), 0) is None
    assert parse_expression("cron(0 0 30 2 ? *)").next_after(utc(2024, 1, 1), 0) is None  # Feb 30 never comes
    assert parse_expression("cron(0 0 1 1 ? 1970)").latest_at_or_before(utc(1969, 12, 31) + 86399, 0) is None


def test_rate_counts_from_the_anchor() -> None:
    anchor = utc(2024, 3, 10, 12, 7)
    rate = parse_expression("rate(5 minutes)")
    assert rate.next_after(anchor, anchor) == anchor + 300
    assert rate.next_after(anchor + 301, anchor) == anchor + 600
    assert rate.latest_at_or_before(anchor + 299, anchor) is None
    assert rate.latest_at_or_before(anchor + 900, anchor) == anchor + 900
    assert rate.count_between(anchor + 1, anchor + 3600, anchor) == 12
    assert fires("rate(1 day)", utc(2024, 2, 28, 6), 2, anchor=utc(2024, 2, 1, 5)) == ["2024-02-29T05:00:00Z", "2024-03-01T05:00:00Z"]


@pytest.mark.parametrize(
    "text", ["cron(*/7 */5 * * ? *)", "cron(13 2,14 L * ? *)", "cron(0 9 ? * 2#1 *)", "cron(45 23 ? FEB,MAR 1L 2024-2025)", "cron(0 0/6 15W * ? *)"]
)
def test_search_agrees_with_a_minute_by_minute_scan(text: str) -> None:
    """next_after, latest_at_or_before and count_between against every minute of Dec 2023 - Mar 2024 (leap February)."""
    cron = parse_expression(text)
    assert isinstance(cron, Cron)
    start, end = utc(2023, 12, 1), utc(2024, 4, 1)
    scanned = [
        day + h * 3600 + m * 60
        for day in range(start, end, 86400)
        if (tm := time.gmtime(day)) and tm.tm_year in cron.years and tm.tm_mon in cron.months and cron.day_matches(tm.tm_year, tm.tm_mon, tm.tm_mday)
        for h in range(24) for m in range(60) if h in cron.hours and m in cron.minutes
    ]
    assert scanned, text
    walked, t = [], start - 1
    while (t := cron.next_after(t)) is not None and t < end:  # type: ignore[assignment]
        walked.append(t)
    assert walked == scanned
    back, t = [], end - 1
    while (t := cron.latest_at_or_before(t)) is not None and t >= start:  # type: ignore[assignment]
        back.append(t)
        t -= 1
    assert back[::-1] == scanned
    assert cron.count_between(start - 1, end - 1) == len(scanned)
    mid = scanned[len(scanned) // 2]
    assert cron.count_between(mid - 30, end - 1) == len([x for x in scanned if x > mid - 30])


# --- the scheduler on a real control database and the real queue ------------------------------------


def schedule(expression: str = "rate(1 minute)", catch_up: str = "once", enabled: bool = True, name: str = "tick", input: str = '{"job": "report"}') -> Schedule:
    return Schedule(name, "worker", parse_expression(expression), input, catch_up, enabled)


def open_scheduler(db_path: Path, *schedules: Schedule, **kwargs: object) -> tuple[Scheduler, SqlEventQueue]:
    """A Scheduler as one server process opens it: its own Database (connections) on the shared file."""
    db = SqliteDatabase(db_path)
    queue = SqlEventQueue(db)
    return Scheduler(SqlScheduleStore(db, queue), {s.name: s for s in schedules}, **kwargs), queue  # type: ignore[arg-type]


def queued_ticks(queue: SqlEventQueue) -> list[str]:
    return sorted(events.event_from_document(json.loads(e.payload)).request.headers["x-edgefn-scheduled-time"][0][1] for e in queue.pending())


T0 = utc(2025, 6, 1, 12, 0, 30)


def test_a_tick_fires_once_as_a_schedule_event(tmp_path: Path) -> None:
    clock = [float(T0)]
    scheduler, queue = open_scheduler(tmp_path / "control.db", schedule(), clock=lambda: clock[0])
    assert scheduler.run_due() == []  # a new schedule starts from now: no backfill
    assert queue.pending() == []
    anchor = utc(2025, 6, 1, 12, 0)
    clock[0] = anchor + 60.2
    (fired,) = scheduler.run_due()
    assert (fired.schedule, fired.tick, fired.invocation_id) == ("tick", anchor + 60, tick_invocation_id("tick", anchor + 60))
    assert scheduler.run_due() == [] and scheduler.run_due(anchor + 119) == []
    (event,) = queue.pending()
    assert (event.id, event.target, event.source) == (fired.request_id, "worker", "schedule")
    doc = events.event_from_document(json.loads(event.payload))
    assert (doc.config.event_type, doc.config.function_name) == ("viewer-request", "worker")
    assert (doc.request.method, doc.request.uri) == ("POST", "/_edgefn/schedule/tick")
    assert doc.request.headers["x-edgefn-schedule"] == [("X-Edgefn-Schedule", "tick")]
    assert doc.request.headers["x-edgefn-scheduled-time"] == [("X-Edgefn-Scheduled-Time", "2025-06-01T12:01:00Z")]
    assert doc.request.body is not None and json.loads(doc.request.body.data) == {"job": "report"}
    assert [f.tick for f in scheduler.run_due(anchor + 180)] == [anchor + 120, anchor + 180]  # a slow pass still fires both
    assert [s.last_tick for s in scheduler.status(anchor + 180)] == [anchor + 180]
    assert [s.next_tick for s in scheduler.status(anchor + 180)] == [anchor + 240]


def test_no_second_fire_after_a_restart_or_from_a_second_process(tmp_path: Path) -> None:
    db_path = tmp_path / "control.db"
    first, queue = open_scheduler(db_path, schedule("cron(* * * * ? *)"))
    first.run_due(T0)
    assert [f.tick for f in first.run_due(T0 + 60)] == [T0 + 30]
    restarted, _ = open_scheduler(db_path, schedule("cron(* * * * ? *)"))  # a new process on the same database
    assert restarted.run_due(T0 + 60) == [] and restarted.run_due(T0 + 89) == []
    # several processes evaluating the same due tick at once: exactly one enqueues it
    racers = [open_scheduler(db_path, schedule("cron(* * * * ? *)"))[0] for _ in range(4)]
    results: list[int] = []
    gate = threading.Barrier(len(racers))

    def race(s: Scheduler) -> None:
        gate.wait()
        results.extend(f.tick for f in s.run_due(T0 + 91))

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [T0 + 90]
    assert queued_ticks(queue) == ["2025-06-01T12:01:00Z", "2025-06-01T12:02:00Z"]


def test_a_failed_enqueue_leaves_the_tick_unfired(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The tick row and the event commit together: an event the queue refuses (over 1 MB) marks nothing as fired."""
    big = schedule(input=json.dumps({"blob": "x" * (1024 * 1024)}))
    scheduler, queue = open_scheduler(tmp_path / "control.db", big, schedule(name="small"))
    scheduler.run_due(T0)
    with caplog.at_level(logging.ERROR, "edgefn.schedules"):
        assert [f.schedule for f in scheduler.run_due(T0 + 30)] == ["small"]
    assert "schedule tick: evaluation failed" in caplog.text
    assert SqliteDatabase(tmp_path / "control.db").query("SELECT schedule FROM schedule_ticks")[0]["schedule"] == "small"
    assert len(SqliteDatabase(tmp_path / "control.db").query("SELECT * FROM schedule_ticks")) == 1 and len(queue.pending()) == 1


ALL_MISSED = [f"12:{m:02d}" for m in range(2, 21)]


@pytest.mark.parametrize(
    "catch_up, expected, dropped",
    [
        ("skip", ["12:21"], "19 missed ticks from 2025-06-01T12:02:00Z to 2025-06-01T12:20:00Z not fired (catch_up = skip)"),
        ("once", ["12:20", "12:21"], "18 missed ticks from 2025-06-01T12:02:00Z to 2025-06-01T12:19:00Z not fired (catch_up = once)"),
        ("all", ALL_MISSED + ["12:21"], None),
    ],
)
def test_catch_up_after_a_gap(tmp_path: Path, catch_up: str, expected: list[str], dropped: str | None, caplog: pytest.LogCaptureFixture) -> None:
    """A server stops after firing 12:01; the next starts at 12:21:10. 12:21 is on time; 12:02-12:20 were missed
    (older than late_after_s = 60 s) and follow catch_up."""
    db_path = tmp_path / "control.db"
    before, queue = open_scheduler(db_path, schedule("cron(* * * * ? *)", catch_up))
    before.run_due(utc(2025, 6, 1, 12, 0, 10))
    assert [iso_time(f.tick) for f in before.run_due(utc(2025, 6, 1, 12, 1, 30))] == ["2025-06-01T12:01:00Z"]
    after, _ = open_scheduler(db_path, schedule("cron(* * * * ? *)", catch_up), late_after_s=60)
    with caplog.at_level(logging.INFO, "edgefn.schedules"):
        fired = after.run_due(utc(2025, 6, 1, 12, 21, 10))
    assert [iso_time(f.tick)[11:16] for f in fired] == expected
    assert queued_ticks(queue) == ["2025-06-01T12:01:00Z"] + [f"2025-06-01T{hm}:00Z" for hm in expected]
    if dropped:
        assert f"schedule tick: {dropped}" in caplog.text
    else:
        assert "not fired" not in caplog.text
    assert after.run_due(utc(2025, 6, 1, 12, 21, 50)) == []


def test_catch_up_all_is_capped_and_says_what_it_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path = tmp_path / "control.db"
    open_scheduler(db_path, schedule(catch_up="all"))[0].run_due(T0)  # anchor 12:00, then no server for 3 hours
    scheduler, queue = open_scheduler(db_path, schedule(catch_up="all"), max_catch_up=100)
    with caplog.at_level(logging.WARNING, "edgefn.schedules"):
        fired = scheduler.run_due(T0 + 3 * 3600)  # 15:00:30: 180 ticks due (12:01-15:00), 15:00 on time
    ticks = [f.tick for f in fired]
    assert len(ticks) == 101 and ticks == sorted(ticks) and ticks[-1] == utc(2025, 6, 1, 15, 0)
    assert ticks[0] == utc(2025, 6, 1, 13, 20)  # the latest 100 missed: 13:20 … 14:59
    assert "schedule tick: 79 missed ticks from 2025-06-01T12:01:00Z to 2025-06-01T13:19:00Z not fired (catch_up = all, at most 100 are fired)" in caplog.text
    assert len(queue.pending()) == 101


def test_changed_disabled_and_reenabled_schedules_start_from_now(tmp_path: Path) -> None:
    db_path = tmp_path / "control.db"
    hourly = schedule("cron(0 * * * ? *)", "all")
    s, queue = open_scheduler(db_path, hourly)
    s.run_due(utc(2025, 6, 1, 0, 30))
    assert [iso_time(f.tick) for f in s.run_due(utc(2025, 6, 1, 1, 0, 5))] == ["2025-06-01T01:00:00Z"]
    # the expression changed while no server ran: its missed ticks are not the new expression's
    s2, _ = open_scheduler(db_path, schedule("cron(30 * * * ? *)", "all"))
    assert s2.run_due(utc(2025, 6, 1, 9, 0)) == []
    assert [iso_time(f.tick) for f in s2.run_due(utc(2025, 6, 1, 9, 30))] == ["2025-06-01T09:30:00Z"]
    # disabled: nothing fires; enabled again later: it starts from then, no catch-up for the paused time
    s3, _ = open_scheduler(db_path, schedule("cron(30 * * * ? *)", "all", enabled=False))
    assert s3.run_due(utc(2025, 6, 1, 12, 0)) == []
    s4, _ = open_scheduler(db_path, schedule("cron(30 * * * ? *)", "all"))
    assert s4.run_due(utc(2025, 6, 1, 15, 0)) == []
    assert [iso_time(f.tick) for f in s4.run_due(utc(2025, 6, 1, 15, 30))] == ["2025-06-01T15:30:00Z"]
    assert len(queue.pending()) == 3


# --- end to end: a real server delivers a due tick ----------------------------------------------------

JOB_C = r"""
#include "edgefn.h"

/* logs "scheduled <x-edgefn-schedule> at <x-edgefn-scheduled-time> method <method> uri <uri> body <body>" */
edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_str name = {0}, at = {0};
    edgefn_header_get(ev->request.headers, "x-edgefn-schedule", &name);
    edgefn_header_get(ev->request.headers, "x-edgefn-scheduled-time", &at);
    edgefn_buf line = {0};
    edgefn_buf_add_cstr(&line, "scheduled ");
    edgefn_buf_add(&line, name);
    edgefn_buf_add_cstr(&line, " at ");
    edgefn_buf_add(&line, at);
    edgefn_buf_add_cstr(&line, " method ");
    edgefn_buf_add(&line, ev->request.method);
    edgefn_buf_add_cstr(&line, " uri ");
    edgefn_buf_add(&line, ev->request.uri);
    edgefn_buf_add_cstr(&line, " body ");
    edgefn_str body = { (const char *)ev->request.body.data.ptr, ev->request.body.data.len };
    edgefn_buf_add(&line, body);
    edgefn_log_str(EDGEFN_LOG_INFO, edgefn_buf_str(&line));
    return edgefn_respond(200, "text/plain", "ok");
}
"""

MANIFEST = """
[app]
name = "timers"

[admin]
port = 0

[functions.job]
source = "job.c"

[schedules.every-minute]
function = "job"
expression = "rate(1 minute)"
input = '{"job": "report"}'
catch_up = "once"
"""


def test_a_server_delivers_a_missed_tick_to_the_function_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No test clock in the server: an earlier "server run" an hour ago is the real Scheduler recording the schedule
    in the control database at that time (what a server would have left behind). The real `edgefn serve`, with two
    worker processes each running a scheduler, then finds the ticks missed since, fires the latest one (catch_up =
    once) through the real async queue, and the function receives it exactly once."""
    from tests.servers import edge_server

    (tmp_path / "job.c").write_text(JOB_C)
    config = tmp_path / "edgefn.toml"
    config.write_text(MANIFEST)
    db_path = tmp_path / ".edgefn" / "control.db"
    hour_ago = time.time() - 3600
    earlier = load_schedules(load_manifest(config), config, now=hour_ago)
    db = SqliteDatabase(db_path)
    Scheduler(SqlScheduleStore(db, SqlEventQueue(db)), earlier).run_due(hour_ago)

    with edge_server(config, "--workers", "2", tls=False) as server:
        deadline = time.monotonic() + 30
        while "scheduled every-minute at" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    log_text = server.log.read_text()
    delivered = re.findall(r"scheduled every-minute at (\S+) method POST uri /_edgefn/schedule/every-minute body (.*)$", log_text, re.MULTILINE)
    assert delivered, log_text
    assert {body for _, body in delivered} == {'{"job": "report"}'}
    rows = SqliteDatabase(db_path).query("SELECT tick FROM schedule_ticks WHERE schedule = 'every-minute' ORDER BY tick")
    fired = [iso_time(r["tick"]) for r in rows]
    assert sorted(at for at, _ in delivered) == fired  # every recorded tick reached the function, each once
    anchor = int(hour_ago // 60 * 60)
    assert all((calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) - anchor) % 60 == 0 for t in fired)
    # the first one is a missed tick (over a minute old when it fired), and the 59 before it were dropped
    assert time.time() - calendar.timegm(time.strptime(fired[0], "%Y-%m-%dT%H:%M:%SZ")) > 60
    assert re.search(r"schedule every-minute: 5\d missed ticks from \S+ to \S+ not fired \(catch_up = once\)", log_text), log_text
    assert "Source: schedule" in log_text
    # `edgefn schedules list` reads the same state: the last tick fired, the next one after now
    assert cli.main(["schedules", "list", "--config", str(config), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["function"], row["expression"], row["catch_up"]) == ("every-minute", "job", "rate(1 minute)", "once")
    assert row["last_tick"] == fired[-1]
    next_tick = calendar.timegm(time.strptime(row["next_tick"], "%Y-%m-%dT%H:%M:%SZ"))
    assert time.time() < next_tick <= time.time() + 60 and (next_tick - anchor) % 60 == 0


def test_serve_refuses_a_bad_expression_before_listening(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "job.c").write_text(JOB_C)
    config = tmp_path / "edgefn.toml"
    config.write_text(MANIFEST.replace("rate(1 minute)", "cron(0 12 ? * MON#6 *)"))
    done = subprocess.run([sys.executable, "-m", "edgefn.cli", "serve", "--config", str(config), "--port", "0", "--tls-port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert (
        f"edgefn: {config}: schedules.every-minute.expression: cron(0 12 ? * MON#6 *): day-of-week field: "
        "'MON#6': the number after # must be 1 to 5\n  fix: day-of-week allows 1-7 or SUN-SAT and , - * ? L #"
    ) in done.stderr
    assert "listening on" not in done.stderr
