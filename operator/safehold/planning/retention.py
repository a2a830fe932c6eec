"""Which backups retention keeps (pure): restic's `forget` semantics, in a time zone.

Rules, as `restic forget --keep-*` (restic 0.16+) applies them: backups are walked newest
first; keepLast keeps the N newest; keepHourly/Daily/Weekly/Monthly/Yearly keep the newest
backup of each of the last N hours/days/ISO weeks/months/years that have one. When a rule has
counts left after the newest backup of every period it saw, it also keeps the oldest backup
(restic does the same, to keep the longest history). A backup is kept when any rule keeps it.
Periods are taken on the wall clock of the policy's time zone.

Safehold's additions: only successful backups take part (failed ones are cleaned after a grace
period, partially failed ones are never deleted by retention); the newest successful backup is
always kept; no rule at all (or only zero counts) keeps everything.

Corrupt backups (a drill or repository check found their data damaged) take no part in the
rules either: they are never the newest good backup that is always kept, and never use up a
count, so the rules keep older good backups instead. What is left of a Corrupt backup is kept
while it is newer than the oldest backup the rules keep (it may still hold what a user needs,
and it becomes whole again when a later backup uploads the lost data); once older, it is
deleted with the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from safehold.api.durations import parse_duration
from safehold.api.policy import Retention
from safehold.planning.policy import BackupView

Bucket = Callable[[datetime], tuple[int, ...]]

# (field of Retention, period of a backup time on the local wall clock)
RULES: tuple[tuple[str, Bucket], ...] = (
    ("keep_hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("keep_daily", lambda t: (t.year, t.month, t.day)),
    ("keep_weekly", lambda t: tuple(t.isocalendar()[:2])),
    ("keep_monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", lambda t: (t.year,)),
)

DEFAULT_FAILED_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class Candidate:
    """One backup as retention sees it."""

    name: str
    time: datetime
    """When it was taken (start time; aware)."""
    successful: bool = True


@dataclass(frozen=True)
class Decision:
    keep: dict[str, list[str]]
    """Backups kept, each with the rules that keep it (e.g. ["last", "daily"])."""
    delete: list[str]
    """Successful backups to delete, oldest first."""


def select(candidates: Sequence[Candidate], retention: Retention | None, zone: tzinfo) -> Decision:
    """Split the successful candidates into kept and deleted (failed ones are ignored)."""
    ordered = sorted(
        (c for c in candidates if c.successful), key=lambda c: (c.time, c.name), reverse=True
    )
    if not ordered:
        return Decision({}, [])
    counts = _counts(retention)
    if not counts:
        return Decision({c.name: ["all"] for c in ordered}, [])
    keep: dict[str, list[str]] = {}
    left = dict(counts)
    last: dict[str, object] = {}
    for index, cand in enumerate(ordered):
        local = cand.time.astimezone(zone)
        reasons = []
        for rule, count in left.items():
            if count <= 0:
                continue
            period: object = index if rule == "keep_last" else _bucket(rule)(local)
            if period != last.get(rule) or index == len(ordered) - 1:
                reasons.append(rule.removeprefix("keep_"))
                last[rule] = period
                left[rule] = count - 1
        if index == 0 and not reasons:
            reasons.append("newest")
        if reasons:
            keep[cand.name] = reasons
    delete = [c.name for c in reversed(ordered) if c.name not in keep]
    return Decision(keep, delete)


def _counts(retention: Retention | None) -> dict[str, int]:
    if retention is None:
        return {}
    fields = ("keep_last", *(rule for rule, _ in RULES))
    return {f: n for f in fields if (n := getattr(retention, f)) is not None and n > 0}


def _bucket(rule: str) -> Bucket:
    return dict(RULES)[rule]


def expired_failures(
    candidates: Sequence[Candidate], now: datetime, grace: timedelta = DEFAULT_FAILED_GRACE
) -> list[str]:
    """Failed backups older than the grace period, oldest first."""
    return [
        c.name
        for c in sorted(candidates, key=lambda c: c.time)
        if not c.successful and now - c.time >= grace
    ]


@dataclass(frozen=True)
class RetentionPlan:
    """What retention deletes for one policy at one moment."""

    expired_failures: list[str]
    """Failed backups past their grace period, oldest first."""
    delete: list[str]
    """Successful backups the rules no longer keep (never the newest), oldest first."""
    newest: str | None
    """The newest successful backup this plan was made after (None: retention does not run
    now; it only ever runs right after a successful run)."""


def plan(
    retention: Retention | None,
    zone: tzinfo,
    last_applied: str | None,
    backups: Sequence[BackupView],
    now: datetime,
) -> RetentionPlan:
    """Retention for the finished `backups` of one policy; `last_applied` is the backup
    after which it last ran (status.lastRetentionBackup)."""
    finished = sorted((b for b in backups if b.finished), key=lambda b: b.sort_key)
    grace = DEFAULT_FAILED_GRACE
    if retention and retention.failed_backup_grace_period:
        grace = parse_duration(retention.failed_backup_grace_period)
    failed = [
        Candidate(b.name, b.completed or b.time, successful=False)
        for b in finished
        if b.phase == "Failed"
    ]
    expired = expired_failures(failed, now, grace)
    if not finished or finished[-1].phase != "Succeeded":
        return RetentionPlan(expired, [], None)  # never after a failed run
    newest = finished[-1].name
    if retention is None or last_applied == newest:
        return RetentionPlan(expired, [], None)
    # A backup the catalog lost is no good backup: it never counts as one retention keeps.
    candidates = [
        Candidate(b.name, b.time) for b in finished if b.phase == "Succeeded" and b.restorable
    ]
    decision = select(candidates, retention, zone)
    delete = [n for n in decision.delete if n != newest]
    delete += aged_out_corrupt(finished, decision, retention)
    order = {b.name: b.sort_key for b in finished}
    return RetentionPlan(expired, sorted(delete, key=lambda n: order[n]), newest)


def aged_out_corrupt(
    finished: Sequence[BackupView], decision: Decision, retention: Retention | None
) -> list[str]:
    """Corrupt successful backups older than the oldest backup the rules keep: out of the
    history retention keeps. None while no good backup is kept or no rule deletes."""
    kept = [b.time for b in finished if b.name in decision.keep]
    if not kept or not _counts(retention):
        return []
    oldest = min(kept)
    return [b.name for b in finished if b.phase == "Succeeded" and b.corrupt and b.time < oldest]
