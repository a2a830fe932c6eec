"""Retention of one policy's backups, executed: the plan comes from planning/retention.py,
every deletion goes through the one deletion path (engine/deletion.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from safehold.engine.deletion import Deleter
from safehold.planning import retention
from safehold.planning.policy import BackupView, Evaluation, Event
from safehold.planning.schedule import parse_zone


def apply_retention(
    deleter: Deleter, evaluation: Evaluation, backups: Sequence[BackupView], now: datetime
) -> tuple[list[Event], list[str]]:
    """Delete what the policy's retention no longer keeps: (events, deleted backups).

    Records the run after which retention ran in the evaluation's status only when every
    planned deletion went through, so a blocked one is tried again on the next pass.
    """
    spec, status = evaluation.spec, evaluation.status
    if spec is None:
        return [], []
    planned = retention.plan(
        spec.retention, parse_zone(spec.time_zone), status.last_retention_backup, backups, now
    )
    views = {b.name: b for b in backups}
    namespace = next(iter(views.values())).namespace if views else ""
    events: list[Event] = []
    deleted: list[str] = []
    for name in planned.expired_failures:
        if deleter.delete(views[name].body, "FailedExpired"):
            deleted.append(f"{namespace}/{name}")
            events.append(Event("Normal", "FailedBackupDeleted", f"failed Backup {name} deleted"))
    if planned.newest is None:
        return events, deleted
    kept_away = [n for n in planned.delete if deleter.delete(views[n].body, "Retention")]
    deleted += [f"{namespace}/{n}" for n in kept_away]
    if len(kept_away) == len(planned.delete):
        status.last_retention_backup = planned.newest
    if kept_away:
        events.append(
            Event(
                "Normal",
                "RetentionApplied",
                f"deleted {len(kept_away)} backup(s) with their data: {', '.join(kept_away)}",
            )
        )
    return events, deleted
