"""Pure evaluation of a policy's drills: which drill is due (same cron, time-zone,
missed-run and concurrency rules as backups; a drill never runs beside another of the
policy), the last finished drill and the RTO target, and which finished drills the history
limits delete."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from safehold.api.base import JSON
from safehold.api.durations import parse_duration
from safehold.api.policy import BackupPolicySpec, BackupPolicyStatus
from safehold.api.verification import VerificationReference
from safehold.planning.meta import parse_time
from safehold.planning.names import object_name
from safehold.planning.schedule import Schedule, ScheduleError, decide

ANNOTATION_DRILL_SCHEDULED = "safehold.io/scheduled-time"


@dataclass(frozen=True)
class DrillView:
    body: JSON
    name: str
    phase: str
    result: str | None
    started: datetime
    completed: datetime | None
    restore_seconds: float | None
    backup: str | None

    @classmethod
    def of(cls, body: JSON) -> DrillView:
        status = body.get("status") or {}
        created = parse_time(body["metadata"].get("creationTimestamp")) or datetime.now(UTC)
        return cls(
            body,
            body["metadata"]["name"],
            status.get("phase") or "New",
            status.get("result"),
            parse_time(status.get("startTime")) or created,
            parse_time(status.get("completionTime")),
            status.get("restoreSeconds"),
            status.get("backup"),
        )

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class DrillRequest:
    name: str
    scheduled: str
    """The scheduled time (UTC), as on the drill's annotation."""


@dataclass
class DrillDecision:
    requests: list[DrillRequest] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    problem: tuple[str, str] | None = None
    """Why Ready is False because of drills (bad schedule, RTO target missed)."""
    skipped_no_backup: bool = False
    next_time: datetime | None = None


def drill_name(policy: str, run_at: datetime) -> str:
    return object_name(policy, "drill", f"{run_at.astimezone(UTC):%Y%m%d%H%M}")


def _last(status: BackupPolicyStatus, drills: list[DrillView]) -> DrillView | None:
    done = sorted((d for d in drills if d.finished), key=lambda d: d.completed or d.started)
    last = done[-1] if done else None
    if last is not None:
        status.last_verification = VerificationReference(
            name=last.name,
            backup=last.backup,
            result="Passed" if last.result == "Passed" else "Failed",
            completion_time=last.completed,
            restore_seconds=last.restore_seconds,
        )
    return last


def _history(spec: BackupPolicySpec, drills: list[DrillView]) -> list[str]:
    verification = spec.verification
    assert verification is not None
    done = sorted((d for d in drills if d.finished), key=lambda d: d.started, reverse=True)
    passed = [d.name for d in done if d.result == "Passed"]
    failed = [d.name for d in done if d.result != "Passed"]
    return (
        passed[verification.successful_history_limit :]
        + failed[verification.failed_history_limit :]
    )


def evaluate_drills(
    name: str,
    spec: BackupPolicySpec,
    status: BackupPolicyStatus,
    drills: list[DrillView],
    has_backup: bool,
    created: datetime,
    now: datetime,
) -> DrillDecision:
    """Mutates `status` (last drill, RTO met, drill cursor and next time)."""
    verification = spec.verification
    if verification is None:
        status.last_verification = None
        status.next_verification_time = None
        status.rto_met = None
        return DrillDecision()
    decision = DrillDecision(delete=_history(spec, drills))
    last = _last(status, drills)
    status.rto_met = None
    if verification.rto_target is not None and last is not None and last.result == "Passed":
        target = parse_duration(verification.rto_target).total_seconds()
        status.rto_met = (last.restore_seconds or 0) <= target
        if not status.rto_met:
            decision.problem = (
                "RtoTargetMissed",
                f"drill {last.name} restored in {last.restore_seconds:.0f}s, above the RTO "
                f"target {verification.rto_target}",
            )
    try:
        schedule = Schedule.parse(verification.schedule, spec.time_zone)
    except ScheduleError as err:
        decision.problem = (err.reason, f"verification.schedule: {err.message}")
        return decision
    due = decide(
        schedule,
        now=now,
        cursor=status.last_evaluated_verification_time,
        created=created,
        suspend=spec.suspend,
        forbid_concurrent=True,
        running=any(not d.finished for d in drills),
        starting_deadline_seconds=spec.starting_deadline_seconds,
    )
    status.last_evaluated_verification_time = due.cursor
    status.next_verification_time = due.next_time
    decision.next_time = due.next_time
    if due.run_at is not None:
        if has_backup:
            stamp = f"{due.run_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            decision.requests.append(DrillRequest(drill_name(name, due.run_at), stamp))
        else:
            decision.skipped_no_backup = True
    return decision
