"""Cron schedules in time zones (DST neither skips nor doubles), missed runs, run names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from safehold.planning.schedule import (
    Schedule,
    ScheduleError,
    decide,
    scheduled_name,
    triggered_name,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def runs(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    sched = Schedule.parse(expr, zone)
    out = []
    for run in sched.runs_after(start):
        if run > end:
            return out
        out.append(run)
    return out


@pytest.mark.parametrize(
    ("expr", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("*/15  9-17 * * MON-FRI", "*/15 9-17 * * MON-FRI"),
    ],
)
def test_macros_and_expressions_parse(expr: str, expanded: str) -> None:
    assert Schedule.parse(expr).expression == expanded


@pytest.mark.parametrize(
    "expr", ["* * * *", "61 * * * *", "@fortnightly", "a b c d e", "* * * * * *"]
)
def test_invalid_schedules_are_named(expr: str) -> None:
    with pytest.raises(ScheduleError) as err:
        Schedule.parse(expr)
    assert err.value.reason == "InvalidSchedule"
    assert expr.split(maxsplit=1)[0] in str(err.value)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(ScheduleError) as err:
        Schedule.parse("@daily", zone)
    assert err.value.reason == "UnknownTimeZone"


def test_berlin_spring_forward_runs_once_at_the_end_of_the_gap() -> None:
    # 2024-03-31 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
    got = runs("30 2 * * *", BERLIN, utc(2024, 3, 29), utc(2024, 4, 2))
    assert got == [
        utc(2024, 3, 29, 1, 30),  # 02:30 CET
        utc(2024, 3, 30, 1, 30),
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST, once
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
    ]


def test_berlin_fall_back_runs_once_at_the_first_occurrence() -> None:
    # 2024-10-27 03:00 CEST falls back to 02:00 CET: 02:30 happens twice.
    got = runs("30 2 * * *", BERLIN, utc(2024, 10, 26), utc(2024, 10, 29))
    assert got == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_new_york_spring_forward_and_fall_back() -> None:
    spring = runs("30 2 * * *", NEW_YORK, utc(2024, 3, 9, 12), utc(2024, 3, 11, 12))
    assert spring == [utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30)]  # 03:00 EDT, 02:30 EDT
    fall = runs("30 1 * * *", NEW_YORK, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12))
    assert fall == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]  # 01:30 EDT once


def test_wildcard_hours_keep_running_every_real_hour_across_fall_back() -> None:
    got = runs("0 * * * *", NEW_YORK, utc(2024, 11, 3, 3, 30), utc(2024, 11, 3, 8, 30))
    assert got == [utc(2024, 11, 3, h) for h in (4, 5, 6, 7, 8)]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, "UTC", "Australia/Lord_Howe"])
def test_a_daily_schedule_runs_exactly_once_per_local_day_for_a_year(zone: str) -> None:
    got = runs("30 2 * * *", zone, utc(2023, 1, 1, 12), utc(2024, 1, 1, 12))
    assert len(got) == 365
    days = {r.astimezone(ZoneInfo(zone)).date() for r in got}
    assert len(days) == 365


def test_runs_between_counts_and_finds_the_latest() -> None:
    sched = Schedule.parse("*/10 * * * *")
    assert sched.runs_between(utc(2026, 1, 1), utc(2026, 1, 1, 1)) == (6, utc(2026, 1, 1, 1))
    assert sched.runs_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 9)) == (0, None)
    count, latest = Schedule.parse("* * * * *").runs_between(utc(2020, 1, 1), utc(2026, 1, 1))
    assert count == 10_000  # capped
    assert latest == utc(2026, 1, 1)


HOURLY = Schedule.parse("0 * * * *")
CREATED = utc(2026, 5, 1, 9, 10)


def test_decide_first_run_after_creation() -> None:
    before = decide(HOURLY, now=utc(2026, 5, 1, 9, 59), cursor=None, created=CREATED)
    assert before.run_at is None
    assert before.next_time == utc(2026, 5, 1, 10)
    assert before.cursor is None
    due = decide(HOURLY, now=utc(2026, 5, 1, 10, 0, 3), cursor=None, created=CREATED)
    assert due.run_at == utc(2026, 5, 1, 10)
    assert due.missed == 0
    assert due.next_time == utc(2026, 5, 1, 11)
    again = decide(HOURLY, now=utc(2026, 5, 1, 10, 0, 8), cursor=due.cursor, created=CREATED)
    assert again.run_at is None


def test_decide_missed_runs_start_one_catch_up_run() -> None:
    got = decide(HOURLY, now=utc(2026, 5, 1, 15, 20), cursor=utc(2026, 5, 1, 10), created=CREATED)
    assert (got.run_at, got.missed) == (utc(2026, 5, 1, 15), 4)  # 11..14 missed, 15 caught up
    assert got.cursor == utc(2026, 5, 1, 15)


def test_decide_starting_deadline() -> None:
    kw = {"cursor": utc(2026, 5, 1, 10), "created": CREATED, "starting_deadline_seconds": 600}
    late = decide(HOURLY, now=utc(2026, 5, 1, 12, 11), **kw)  # type: ignore[arg-type]
    assert (late.run_at, late.missed, late.cursor) == (None, 2, utc(2026, 5, 1, 12))
    in_time = decide(HOURLY, now=utc(2026, 5, 1, 12, 9), **kw)  # type: ignore[arg-type]
    assert (in_time.run_at, in_time.missed) == (utc(2026, 5, 1, 12), 1)


def test_decide_concurrency_policy() -> None:
    kw = {"now": utc(2026, 5, 1, 11, 0, 5), "cursor": utc(2026, 5, 1, 10), "created": CREATED}
    forbid = decide(HOURLY, running=True, **kw)  # type: ignore[arg-type]
    assert (forbid.run_at, forbid.skipped, forbid.cursor) == (None, True, utc(2026, 5, 1, 11))
    allow = decide(HOURLY, running=True, forbid_concurrent=False, **kw)  # type: ignore[arg-type]
    assert allow.run_at == utc(2026, 5, 1, 11)


def test_decide_suspend_moves_the_cursor_silently() -> None:
    got = decide(
        HOURLY,
        now=utc(2026, 5, 1, 15, 20),
        cursor=utc(2026, 5, 1, 10),
        created=CREATED,
        suspend=True,
    )
    assert (got.run_at, got.missed, got.next_time) == (None, 0, None)
    assert got.cursor == utc(2026, 5, 1, 15)
    resumed = decide(HOURLY, now=utc(2026, 5, 1, 15, 30), cursor=got.cursor, created=CREATED)
    assert resumed.run_at is None
    assert resumed.next_time == utc(2026, 5, 1, 16)


def test_decide_without_schedule_never_runs() -> None:
    got = decide(None, now=utc(2030, 1, 1), cursor=None, created=CREATED)
    assert (got.run_at, got.next_time, got.missed) == (None, None, 0)


def test_run_names_are_deterministic() -> None:
    at = datetime(2026, 3, 29, 3, 0, tzinfo=ZoneInfo(BERLIN))
    assert scheduled_name("nightly", at) == "nightly-202603290100"
    first = triggered_name("nightly", "v1", None)
    assert first == triggered_name("nightly", "v1", None)
    assert first.startswith("nightly-trigger-")
    assert triggered_name("nightly", "v1", "v2") != first
    assert len(scheduled_name("p" * 253, at)) <= 253
    assert scheduled_name("p", at + timedelta(minutes=1)) != scheduled_name("p", at)
