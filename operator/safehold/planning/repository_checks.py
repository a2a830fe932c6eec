"""Pure decisions of the scheduled repository check of a location: when it is due, which part
of the data it reads, which Backups a damaged repository affects, and the status it writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from safehold.api.durations import parse_duration
from safehold.api.location import (
    BackupStorageLocationSpec,
    BackupStorageLocationStatus,
    RepositoryCheckOutcome,
    RepositoryCheckStatus,
)
from safehold.planning.conditions import set_condition

DEGRADED = "Degraded"
FAILED_RETRY = timedelta(hours=1)
NAMES_SHOWN = 20
SHORT_ID = 8


def check_due(
    spec: BackupStorageLocationSpec,
    status: BackupStorageLocationStatus,
    created: datetime | None,
    now: datetime,
) -> bool:
    """Whether the location's repositories should be checked now: one interval after the
    last check (after one that could not run, at most FAILED_RETRY later), or after the
    location's creation when it was never checked."""
    if not spec.repository_check.enabled:
        return False
    check = status.repository_check
    since = (check.last_check_time if check else None) or created
    period = parse_duration(spec.repository_check.interval)
    if check is not None and check.result == "Failed":
        period = min(period, FAILED_RETRY)
    return since is None or now - since >= period


def read_data_subset(runs: int, read_data_runs: int) -> tuple[int, int] | None:
    """The part k/N of the pack files the next check reads: run r reads part r mod N + 1, so
    that N successive checks read every pack once; None when no data is read (N = 0)."""
    if read_data_runs <= 0:
        return None
    return (runs % read_data_runs + 1, read_data_runs)


def same_snapshot(a: str, b: str) -> bool:
    """Whether two snapshot ids (full, or restic's 8-character short form) name the same
    snapshot."""
    if min(len(a), len(b)) < SHORT_ID:
        return False
    return a.startswith(b) or b.startswith(a)


def affected_backups(
    owned: Mapping[str, Mapping[str, set[str]]],
    damaged: Mapping[str, frozenset[str]],
) -> dict[str, list[str]]:
    """The Backups (by name) that reference a damaged snapshot, each with the ids (short)
    of its damaged snapshots. `owned` is each Backup's snapshots by repository key, `damaged`
    the damaged snapshots by repository key."""
    found: dict[str, list[str]] = {}
    for name, repositories in sorted(owned.items()):
        hits = sorted(
            snapshot[:SHORT_ID]
            for key, snapshots in repositories.items()
            for snapshot in snapshots
            if any(same_snapshot(snapshot, bad) for bad in damaged.get(key, ()))
        )
        if hits:
            found[name] = hits
    return found


def names(items: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    """A list of names for a message, cut after `limit`."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass(frozen=True)
class CheckOutcome:
    """What one scheduled check found and did."""

    result: RepositoryCheckOutcome
    reason: str
    message: str
    duration_seconds: float
    subset: tuple[int, int] | None
    corrupt: Sequence[str] = field(default_factory=tuple)
    """Backups found damaged."""
    repaired: bool = False
    """The index is repaired, now or by an earlier check (the next backup uploads the lost
    data again)."""
    repair_error: str | None = None
    """Why a needed repair did not happen."""


def degraded_message(outcome: CheckOutcome, read_only: bool) -> str:
    """The Degraded condition's message after a check that found damage."""
    text = outcome.message
    if outcome.corrupt:
        text += f". Backups marked Corrupt: {names(list(outcome.corrupt))}"
    else:
        text += ". No Backup references the damaged snapshots"
    if outcome.repaired:
        text += ". The index is repaired: the next backup of the same data uploads it again"
    elif read_only:
        text += ". The location is ReadOnly: the repository was not repaired"
    elif outcome.repair_error:
        text += f". The repair failed and is retried with the next check: {outcome.repair_error}"
    return text


def status_after_check(
    status: BackupStorageLocationStatus,
    outcome: CheckOutcome,
    generation: int | None,
    now: datetime,
    *,
    read_only: bool = False,
) -> BackupStorageLocationStatus:
    """The location's status after a check: its repositoryCheck and, unless the check could
    not run, the Degraded condition (True naming the damage, False when it passed)."""
    before = status.repository_check or RepositoryCheckStatus()
    conditions = status.conditions
    if outcome.result == "Damaged":
        message = degraded_message(outcome, read_only)
        conditions = set_condition(
            conditions, DEGRADED, "True", outcome.reason, message, generation, now
        )
    elif outcome.result == "Passed":
        conditions = set_condition(
            conditions, DEGRADED, "False", outcome.reason, outcome.message, generation, now
        )
    subset = outcome.subset
    check = RepositoryCheckStatus(
        last_check_time=now,
        last_passed_time=now if outcome.result == "Passed" else before.last_passed_time,
        result=outcome.result,
        reason=outcome.reason,
        message=outcome.message,
        read_data_subset=f"{subset[0]}/{subset[1]}" if subset else None,
        runs=before.runs + (0 if outcome.result == "Failed" else 1),
        duration_seconds=round(outcome.duration_seconds, 3),
        corrupt_backups=list(outcome.corrupt),
    )
    return status.model_copy(update={"conditions": conditions, "repository_check": check})
