"""Cron schedules in an IANA time zone (pure).

Five-field cron expressions and the macros @hourly, @daily (@midnight), @weekly, @monthly,
@yearly (@annually), evaluated on the wall clock of a time zone. Daylight-saving changes
neither skip nor double a run, with the semantics of Debian's cron (implemented by cronsim):

- a run whose wall-clock time falls into a spring-forward gap runs once, at the end of the gap
  (02:30 on the day Europe/Berlin jumps from 02:00 to 03:00 runs at 03:00 CEST);
- a fixed-time run whose wall-clock time occurs twice in a fall-back overlap runs once, at the
  first occurrence;
- a schedule with a wildcard hour (`*/15 * * * *`) keeps running every real interval.

All datetimes in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from safehold.api.errors import Failure

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Missed-run counting stops here: a policy down for years should not cost minutes of CPU.
MAX_COUNTED_RUNS = 10_000


class ScheduleError(Failure, ValueError):
    """An invalid schedule or time zone; `reason` is InvalidSchedule or UnknownTimeZone."""


def parse_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ScheduleError(UnknownTimeZone) otherwise."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "UnknownTimeZone",
            f"unknown time zone {name!r}: use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York",
        ) from None


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression in a time zone."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Schedule:
        """Validate both; raises ScheduleError naming what is wrong."""
        zone = parse_zone(time_zone)
        text = " ".join(expression.split())
        expanded = MACROS.get(text.lower(), text)
        if text.startswith("@") and text.lower() not in MACROS:
            raise ScheduleError(
                "InvalidSchedule",
                f"unknown schedule macro {text!r}: use one of {', '.join(sorted(MACROS))}",
            )
        if len(expanded.split()) != 5:
            raise ScheduleError(
                "InvalidSchedule",
                f"invalid schedule {expression!r}: expected 5 fields (minute hour day-of-month "
                "month day-of-week) or a macro such as @daily",
            )
        try:
            CronSim(expanded, datetime(2000, 1, 1, tzinfo=zone))
        except CronSimError as err:
            raise ScheduleError(
                "InvalidSchedule", f"invalid schedule {expression!r}: {err}"
            ) from None
        return cls(expanded, zone)

    def runs_after(self, after: datetime) -> Iterator[datetime]:
        """Every run time strictly after `after`, in UTC, ascending (minute precision)."""
        for run in CronSim(self.expression, after.astimezone(self.zone)):
            yield run.astimezone(UTC)

    def next_after(self, after: datetime) -> datetime | None:
        """The first run strictly after `after` (None for a date that never comes, e.g. 30 Feb)."""
        try:
            return next(self.runs_after(after))
        except StopIteration:
            return None

    def runs_between(self, after: datetime, until: datetime) -> tuple[int, datetime | None]:
        """How many runs fall in (after, until], and the latest of them (None when none).

        The count stops at MAX_COUNTED_RUNS; the latest run is then the last one counted."""
        count, latest = 0, None
        for run in self.runs_after(after):
            if run > until:
                return count, latest
            if count >= MAX_COUNTED_RUNS:
                break
            count, latest = count + 1, run
        if latest is None:
            return count, latest
        # Too many to count: the latest one comes from iterating backwards from `until`.
        start = (until + timedelta(seconds=1)).astimezone(self.zone)
        last = next(CronSim(self.expression, start, reverse=True)).astimezone(UTC)
        return count, max(last, latest)


@dataclass(frozen=True)
class ScheduleDecision:
    """What the scheduler does for one policy at one moment."""

    run_at: datetime | None
    """Scheduled time of the run to start now (it names the Backup); None: start nothing."""
    missed: int
    """Scheduled runs that will never start (down past the deadline, or several missed:
    only the latest is caught up)."""
    skipped: bool
    """The due run was skipped because one still runs (concurrencyPolicy Forbid)."""
    cursor: datetime | None
    """The new last-evaluated scheduled time."""
    next_time: datetime | None
    """When the next run is due (None when suspended or on demand only)."""


def decide(
    schedule: Schedule | None,
    *,
    now: datetime,
    cursor: datetime | None,
    created: datetime,
    suspend: bool = False,
    forbid_concurrent: bool = True,
    running: bool = False,
    starting_deadline_seconds: int | None = None,
) -> ScheduleDecision:
    """Like the CronJob controller: of the runs due since the cursor (or the policy's creation),
    start the latest one if it is within the starting deadline; count the others as missed.
    A suspended policy moves its cursor without starting or counting anything, so resuming it
    does not start a catch-up run for the time it was suspended."""
    if schedule is None:
        return ScheduleDecision(None, 0, False, cursor, None)
    base = cursor or created
    count, latest = schedule.runs_between(base, now)
    next_time = None if suspend else schedule.next_after(max(base, now))
    if latest is None:
        return ScheduleDecision(None, 0, False, cursor, next_time)
    if suspend:
        return ScheduleDecision(None, 0, False, latest, None)
    too_late = (
        starting_deadline_seconds is not None
        and (now - latest).total_seconds() > starting_deadline_seconds
    )
    missed = count - 1 + (1 if too_late else 0)
    if too_late:
        return ScheduleDecision(None, missed, False, latest, next_time)
    if running and forbid_concurrent:
        return ScheduleDecision(None, missed, True, latest, next_time)
    return ScheduleDecision(latest, missed, False, latest, next_time)


def scheduled_name(policy: str, run_at: datetime) -> str:
    """Deterministic Backup name of a scheduled run: <policy>-<yyyymmddhhmm> (UTC)."""
    return f"{policy[:240]}-{run_at.astimezone(UTC):%Y%m%d%H%M}"


def triggered_name(policy: str, value: str, previous: str | None) -> str:
    """Deterministic Backup name of an annotation-triggered run (the same value after another
    one triggers again, under a different name)."""
    digest = hashlib.sha256(f"{previous or ''}\0{value}".encode()).hexdigest()[:8]
    return f"{policy[:230]}-trigger-{digest}"
