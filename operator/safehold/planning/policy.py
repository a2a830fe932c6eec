"""Pure evaluation of one BackupPolicy at one moment: is it valid and Ready, is its RPO met,
which runs are due. The scheduling loop (engine/scheduler.py) acts on the `Evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from safehold.api.base import JSON
from safehold.api.durations import parse_duration
from safehold.api.errors import Failure, invalid_spec
from safehold.api.labels import (
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    ANNOTATION_TRIGGERED_BY,
)
from safehold.api.policy import BackupPolicySpec, BackupPolicyStatus, BackupReference
from safehold.planning.conditions import set_condition
from safehold.planning.drill_schedule import DrillDecision, DrillView, evaluate_drills
from safehold.planning.locations import location_problem
from safehold.planning.meta import parse_time
from safehold.planning.runs import TERMINAL
from safehold.planning.schedule import (
    Schedule,
    ScheduleDecision,
    ScheduleError,
    decide,
    scheduled_name,
    triggered_name,
)
from safehold.planning.selection import Scope, SelectionError

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class BackupView:
    """What scheduling, retention and deletion need of one Backup."""

    body: JSON
    name: str
    phase: str
    time: datetime
    """Start time (creation when it never started): the time retention buckets by."""
    completed: datetime | None

    @classmethod
    def of(cls, body: JSON, now: datetime | None = None) -> BackupView:
        status = body.get("status") or {}
        created = parse_time(body["metadata"].get("creationTimestamp")) or now or datetime.now(UTC)
        return cls(
            body,
            body["metadata"]["name"],
            status.get("phase") or "New",
            parse_time(status.get("startTime")) or created,
            parse_time(status.get("completionTime")),
        )

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    @property
    def corrupt(self) -> bool:
        """A drill or repository check found its data, index or manifest damaged."""
        verdict = (self.body.get("status") or {}).get("verification") or {}
        return bool(verdict.get("result") == "Corrupt")

    @property
    def restorable(self) -> bool:
        """Succeeded or PartiallyFailed, not Corrupt, and not known to be gone from the
        catalog: what a latest restore, a drill and retention's newest good backup may be."""
        if self.phase not in ("Succeeded", "PartiallyFailed") or self.corrupt:
            return False
        conditions = (self.body.get("status") or {}).get("conditions") or []
        state = next((c for c in conditions if c.get("type") == "Restorable"), None)
        return state is None or state.get("status") != "False"

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.completed or self.time, self.name)


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class RunRequest:
    """A Backup to create for a due run; `started` is posted when it was created now."""

    backup: str
    annotations: dict[str, str]
    started: Event


@dataclass
class Evaluation:
    """What one pass decided for one policy."""

    spec: BackupPolicySpec | None
    """None when the model refuses the spec (Ready says why)."""
    before: BackupPolicyStatus
    status: BackupPolicyStatus
    """The new status; the loop adds retention's bookkeeping before writing it."""
    location_ready: bool
    ready: tuple[Literal["True", "False"], str, str]
    runs: list[RunRequest] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    missed: int = 0
    """Runs newly counted as missed (for the metric)."""
    next_time: datetime | None = None
    newest: BackupView | None = None
    """The newest successful Backup."""
    drills: DrillDecision = field(default_factory=DrillDecision)
    """Drills due, drills the history limits delete."""


def _out_of_scope(spec: BackupPolicySpec, scope: Scope) -> tuple[str, str] | None:
    """Why the policy reaches beyond its namespace, if it does (a tenant's may not)."""
    sel = spec.selection
    try:
        scope.backup_namespaces(
            sel.namespaces, sel.namespace_selector, sel.include_cluster_resources
        )
        scope.check_database_targets(spec.databases)
    except SelectionError as err:
        return err.reason, err.message
    return None


def _validate(
    spec: BackupPolicySpec, location: JSON | None, scope: Scope
) -> tuple[tuple[str, str] | None, Schedule | None]:
    """(problem, schedule): the first thing wrong with the spec or its location."""
    schedule: Schedule | None = None
    try:
        if spec.schedule:
            schedule = Schedule.parse(spec.schedule, spec.time_zone)
        else:
            Schedule.parse("@daily", spec.time_zone)  # the zone still counts for retention
    except ScheduleError as err:
        return (err.reason, err.message), None
    if spec.rpo is not None:
        try:
            parse_duration(spec.rpo)
        except ValueError as err:
            return ("InvalidRPO", str(err)), schedule
    outside = _out_of_scope(spec, scope)
    if outside is not None:
        return outside, schedule
    found = location_problem(location)
    if found is not None:
        return (found[0], f"BackupStorageLocation {spec.storage_location} {found[1]}"), schedule
    return None, schedule


def newest_success(mine: list[BackupView]) -> BackupView | None:
    succeeded = sorted(
        (b for b in mine if b.phase == "Succeeded" and b.restorable), key=lambda b: b.sort_key
    )
    return succeeded[-1] if succeeded else None


def _track_success(status: BackupPolicyStatus, mine: list[BackupView]) -> BackupView | None:
    newest = newest_success(mine)
    if newest is not None:
        status.last_successful_backup = BackupReference(
            name=newest.name, completion_time=newest.completed
        )
    elif status.last_successful_backup is not None and not any(
        b.name == status.last_successful_backup.name for b in mine
    ):
        status.last_successful_backup = None
    return newest


def _rpo(
    spec: BackupPolicySpec,
    status: BackupPolicyStatus,
    newest: BackupView | None,
    since_created: datetime,
    now: datetime,
) -> str:
    """Set status.rpoMet; returns the violation message ('' when met or unset)."""
    if spec.rpo is None:
        status.rpo_met = None
        return ""
    since = (newest.completed if newest else None) or since_created
    status.rpo_met = now - since <= parse_duration(spec.rpo)
    if status.rpo_met:
        return ""
    what = f"newest successful backup {newest.name}" if newest else "no backup"
    return (
        f"RPO {spec.rpo} violated: {what} since {since:%Y-%m-%dT%H:%M:%SZ} ({age(now - since)} ago)"
    )


def _schedule_events(spec: BackupPolicySpec, decision: ScheduleDecision) -> list[Event]:
    events = []
    if decision.missed:
        catch_up = " and starting one catch-up run" if decision.run_at else ""
        deadline = (
            f" (starting deadline {spec.starting_deadline_seconds}s)"
            if spec.starting_deadline_seconds is not None
            else ""
        )
        events.append(
            Event(
                "Warning",
                "MissedRuns",
                f"{decision.missed} scheduled run(s) missed{catch_up}{deadline}",
            )
        )
    if decision.skipped and decision.cursor is not None:
        events.append(
            Event(
                "Warning",
                "RunSkipped",
                f"run of {decision.cursor:%Y-%m-%dT%H:%M:%SZ} skipped: the previous run "
                "still runs (concurrencyPolicy Forbid)",
            )
        )
    return events


def _runs(
    name: str,
    spec: BackupPolicySpec,
    status: BackupPolicyStatus,
    annotations: dict[str, str],
    decision: ScheduleDecision,
    now: datetime,
) -> list[RunRequest]:
    """The scheduled run due now, then the run the trigger annotation asks for."""
    runs = []
    if decision.run_at is not None:
        stamp = f"{decision.run_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        backup = scheduled_name(name, decision.run_at)
        started = Event("Normal", "BackupStarted", f"scheduled run {stamp}: Backup {backup}")
        runs.append(RunRequest(backup, {ANNOTATION_SCHEDULED_TIME: stamp}, started))
        status.last_schedule_time = now
    trigger = annotations.get(ANNOTATION_TRIGGER)
    if trigger and trigger != status.last_trigger:
        backup = triggered_name(name, trigger, status.last_trigger)
        started = Event("Normal", "BackupStarted", f"triggered by {ANNOTATION_TRIGGER}={trigger}")
        runs.append(RunRequest(backup, {ANNOTATION_TRIGGERED_BY: trigger[:253]}, started))
        status.last_trigger = trigger
        status.last_schedule_time = now
    return runs


def _ready(
    spec: BackupPolicySpec,
    problem: tuple[str, str] | None,
    rpo_message: str,
    schedule: Schedule | None,
    next_time: datetime | None,
) -> tuple[Literal["True", "False"], str, str]:
    if problem is not None:
        return ("False", problem[0], problem[1])
    if rpo_message:
        return ("False", "RPOViolated", rpo_message)
    if spec.suspend:
        return ("True", "Suspended", "valid; suspended: no scheduled runs")
    if schedule is None:
        return ("True", "OnDemand", "valid; no schedule: runs on demand only")
    when = f"{next_time:%Y-%m-%dT%H:%M:%SZ}" if next_time else "never"
    return ("True", "Scheduled", f"next run {when} ({spec.schedule} {spec.time_zone})")


def evaluate(
    body: JSON,
    mine: list[BackupView],
    location: JSON | None,
    now: datetime,
    operator_namespace: str,
    drills: list[DrillView] | None = None,
) -> Evaluation:
    """Evaluate one policy (`mine`: its Backups; `location`: its location's body or None;
    `drills`: its BackupVerifications)."""
    meta = body["metadata"]
    before = BackupPolicyStatus.model_validate(body.get("status") or {})
    try:
        spec = BackupPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return _invalid(body, before, invalid_spec(err), now)
    status = before.model_copy(deep=True)
    created = parse_time(meta.get("creationTimestamp")) or now
    problem, schedule = _validate(spec, location, Scope(meta["namespace"], operator_namespace))
    newest = _track_success(status, mine)
    rpo_message = _rpo(spec, status, newest, created, now) if problem is None else ""
    decision = decide(
        schedule,
        now=now,
        cursor=status.last_evaluated_schedule_time,
        created=created,
        suspend=spec.suspend,
        forbid_concurrent=spec.concurrency_policy == "Forbid",
        running=any(not b.finished for b in mine),
        starting_deadline_seconds=spec.starting_deadline_seconds,
    )
    status.next_schedule_time = decision.next_time
    status.last_evaluated_schedule_time = decision.cursor
    missed = decision.missed + (1 if decision.skipped else 0)
    if missed:
        status.missed_runs = (status.missed_runs or 0) + missed
    runs = _runs(meta["name"], spec, status, meta.get("annotations") or {}, decision, now)
    drill_decision = evaluate_drills(
        meta["name"], spec, status, drills or [], newest is not None, created, now
    )
    if problem is None and drill_decision.problem is not None:
        problem = drill_decision.problem
    ready = _ready(spec, problem, rpo_message, schedule, decision.next_time)
    status.conditions = set_condition(
        status.conditions, "Ready", *ready, meta.get("generation"), now
    )
    status.observed_generation = meta.get("generation")
    return Evaluation(
        spec=spec,
        before=before,
        status=status,
        location_ready=problem is None,
        ready=ready,
        runs=runs,
        events=_schedule_events(spec, decision),
        missed=missed,
        next_time=_earliest(decision.next_time, drill_decision.next_time),
        newest=newest,
        drills=drill_decision,
    )


def _earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _invalid(body: JSON, before: BackupPolicyStatus, failure: Failure, now: datetime) -> Evaluation:
    """A spec the model refuses: Ready False with the reason, nothing scheduled."""
    generation = body["metadata"].get("generation")
    status = before.model_copy(deep=True)
    ready: tuple[Literal["True", "False"], str, str] = ("False", failure.reason, failure.message)
    status.conditions = set_condition(status.conditions, "Ready", *ready, generation, now)
    status.observed_generation = generation
    status.next_schedule_time = None
    return Evaluation(spec=None, before=before, status=status, location_ready=False, ready=ready)


def age(delta: timedelta) -> str:
    """A short human age: 3d4h, 2h5m, 4m10s."""
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 60}m{seconds % 60}s"
