"""The policy scheduler: one operator-wide loop (not a Kopf timer per object, which would
force a finalizer onto every policy) that, on every tick and whenever a policy or Backup
changes:

- validates each BackupPolicy (schedule, time zone, location) and writes its Ready condition;
- starts scheduled, caught-up and annotation-triggered runs as Backups with deterministic
  names, so a crash between creating a Backup and recording it never starts a run twice;
- after each new successful run of a policy applies its retention, and deletes failed runs
  after their grace period;
- handles explicit delete requests and expired ttls of any Backup;
- prunes each location's repository once per prune interval;
- evaluates the RPO of each policy.

`Scheduler.tick(now)` is one pass with an injectable clock; tests call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from safehold import API_VERSION
from safehold.api.kinds import BACKUP, LOCATION, POLICY
from safehold.api.location import BackupStorageLocationSpec
from safehold.api.policy import BackupPolicySpec, BackupPolicyStatus, BackupReference
from safehold.config import (
    ANNOTATION_DELETE_REQUESTED,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    ANNOTATION_TRIGGERED_BY,
    LABEL_POLICY,
)
from safehold.engine.common import RunError, custom_path, load_location
from safehold.engine.deletion import DeletionBlocked, delete_backup, prune_repository
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.resources import list_all, patch_status
from safehold.kube.rest import ApiError
from safehold.metrics import LAST_SUCCESS, MISSED_RUNS, POLICY_READY, PRUNES, RPO_VIOLATED
from safehold.planning import retention
from safehold.planning.conditions import changed, set_condition
from safehold.planning.durations import parse_duration
from safehold.planning.runs import TERMINAL
from safehold.planning.schedule import (
    Schedule,
    ScheduleError,
    decide,
    scheduled_name,
    triggered_name,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]
Clock = Callable[[], datetime]

TICK_SECONDS = 10.0
DEBOUNCE_SECONDS = 0.5
WRITE_WORKERS = 8


def _prune_interval() -> timedelta:
    return parse_duration(os.environ.get("SAFEHOLD_PRUNE_INTERVAL") or "24h")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass
class BackupView:
    """What the scheduler needs of one Backup."""

    body: JSON
    name: str
    phase: str
    time: datetime
    """Start time (creation when it never started): the time retention buckets by."""
    completed: datetime | None

    @classmethod
    def of(cls, body: JSON) -> BackupView:
        status = body.get("status") or {}
        created = _time(body["metadata"].get("creationTimestamp")) or datetime.now(UTC)
        return cls(
            body,
            body["metadata"]["name"],
            status.get("phase") or "New",
            _time(status.get("startTime")) or created,
            _time(status.get("completionTime")),
        )

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    @property
    def sort_key(self) -> tuple[datetime, str]:
        return (self.completed or self.time, self.name)


@dataclass
class TickResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    next_due: datetime | None = None
    writes: list[Callable[[], None]] = field(default_factory=list)
    """Status patches and events of the pass, made together at its end."""


class Scheduler:
    def __init__(self, clients: Clients, clock: Clock | None = None) -> None:
        self.clients = clients
        self.clock = clock or (lambda: datetime.now(UTC))
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruned: dict[str, datetime] = {}
        self._pruning: set[str] = set()
        self._blocked: set[str] = set()
        self._mutex = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None

    # ---- the loop ---------------------------------------------------------------------
    def wake(self) -> None:
        """Ask for a pass soon: from Kopf event handlers on the event loop, or from worker
        threads (a location whose Ready changed)."""
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wake.set)

    async def loop(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            delay = TICK_SECONDS
            try:
                result = await asyncio.to_thread(self.tick)
                if result.next_due is not None:
                    until = (result.next_due - self.clock()).total_seconds()
                    delay = min(TICK_SECONDS, max(until, 0.2))
            except Exception:
                log.exception("policy scheduler pass failed")
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            if self._wake.is_set() and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), DEBOUNCE_SECONDS)

    # ---- one pass ---------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> TickResult:
        with self._mutex:
            return self._tick(now or self.clock())

    def _tick(self, now: datetime) -> TickResult:
        result = TickResult()
        policies = list_all(self.clients.custom, POLICY)
        backups = [BackupView.of(b) for b in list_all(self.clients.custom, BACKUP)]
        locations = {
            (b["metadata"]["namespace"], b["metadata"]["name"]): b
            for b in list_all(self.clients.custom, LOCATION)
        }
        by_policy: dict[tuple[str, str], list[BackupView]] = defaultdict(list)
        for view in backups:
            meta = view.body["metadata"]
            policy = (meta.get("labels") or {}).get(LABEL_POLICY) or (
                (view.body.get("spec") or {}).get("policyRef") or {}
            ).get("name")
            if policy:
                by_policy[(meta["namespace"], policy)].append(view)
        self._requested_deletions(backups, now, result)
        for body in policies:
            if body["metadata"].get("deletionTimestamp"):
                continue
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            try:
                due = self._policy(body, by_policy.get(key, []), locations, now, result)
            except Exception:  # one broken policy must not stop the others
                log.exception("scheduling policy %s/%s failed", *key)
                continue
            if due is not None and (result.next_due is None or due < result.next_due):
                result.next_due = due
        self._flush(result.writes)
        self._prune_due(locations, backups, now, result)
        return result

    # ---- explicit deletion and ttl ------------------------------------------------------
    def _requested_deletions(
        self, backups: Iterable[BackupView], now: datetime, result: TickResult
    ) -> None:
        for view in backups:
            meta = view.body["metadata"]
            annotations = meta.get("annotations") or {}
            expires = _time((view.body.get("status") or {}).get("expiresAt"))
            if annotations.get(ANNOTATION_DELETE_REQUESTED) == "true":
                reason = "Requested"
            elif expires is not None and expires <= now and view.finished:
                reason = "Expired"
            else:
                continue
            self._delete(view.body, reason, result)

    def _delete(self, body: JSON, reason: str, result: TickResult) -> bool:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        try:
            delete_backup(self.clients, body, reason)
        except DeletionBlocked as err:
            if key not in self._blocked:
                self._blocked.add(key)
                log.warning("deletion of backup %s postponed: %s", key, err)
                self._backup_event(body, "Warning", "DeletionPostponed", str(err))
            return False
        except Exception:
            log.exception("deletion of backup %s failed", key)
            return False
        self._blocked.discard(key)
        result.deleted.append(key)
        return True

    def _backup_event(self, body: JSON, type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        post_event(
            self.clients.core,
            BACKUP.kind,
            meta["namespace"],
            meta["name"],
            meta.get("uid"),
            "Normal" if type_ == "Normal" else "Warning",
            reason,
            message,
        )

    # ---- one policy -------------------------------------------------------------------
    def _policy(
        self,
        body: JSON,
        mine: list[BackupView],
        locations: dict[tuple[str, str], JSON],
        now: datetime,
        result: TickResult,
    ) -> datetime | None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")
        spec = BackupPolicySpec.model_validate(body.get("spec") or {})
        before = BackupPolicyStatus.model_validate(body.get("status") or {})
        status = before.model_copy(deep=True)
        created = _time(meta.get("creationTimestamp")) or now
        events: list[tuple[str, str, str]] = []

        # Validity of the spec, then of the location.
        problem: tuple[str, str] | None = None
        schedule: Schedule | None = None
        try:
            if spec.schedule:
                schedule = Schedule.parse(spec.schedule, spec.time_zone)
            else:
                Schedule.parse("@daily", spec.time_zone)  # the zone still counts for retention
        except ScheduleError as err:
            problem = (err.reason, str(err))
        if problem is None and spec.rpo is not None:
            try:
                parse_duration(spec.rpo)
            except ValueError as err:
                problem = ("InvalidRPO", str(err))
        location_ready = False
        if problem is None:
            problem = _location_problem(locations.get((namespace, spec.storage_location)))
            location_ready = problem is None
            if problem is not None:
                problem = (
                    problem[0],
                    f"BackupStorageLocation {spec.storage_location}: {problem[1]}",
                )

        # The newest successful backup, and RPO.
        succeeded = sorted((b for b in mine if b.phase == "Succeeded"), key=lambda b: b.sort_key)
        newest_ok = succeeded[-1] if succeeded else None
        if newest_ok is not None:
            status.last_successful_backup = BackupReference(
                name=newest_ok.name, completion_time=newest_ok.completed
            )
            if newest_ok.completed is not None:
                LAST_SUCCESS.labels(namespace, name).set(newest_ok.completed.timestamp())
        elif status.last_successful_backup is not None and not any(
            b.name == status.last_successful_backup.name for b in mine
        ):
            status.last_successful_backup = None
        rpo_message = ""
        if spec.rpo is not None and problem is None:
            limit = parse_duration(spec.rpo)
            since = (newest_ok.completed if newest_ok else None) or created
            status.rpo_met = now - since <= limit
            if not status.rpo_met:
                what = f"newest successful backup {newest_ok.name}" if newest_ok else "no backup"
                rpo_message = (
                    f"RPO {spec.rpo} violated: {what} since {since:%Y-%m-%dT%H:%M:%SZ} "
                    f"({_age(now - since)} ago)"
                )
        elif spec.rpo is None:
            status.rpo_met = None
        RPO_VIOLATED.labels(namespace, name).set(1 if status.rpo_met is False else 0)

        # Runs: scheduled, then triggered.
        running = any(not b.finished for b in mine)
        decision = decide(
            schedule,
            now=now,
            cursor=status.last_evaluated_schedule_time,
            created=created,
            suspend=spec.suspend,
            forbid_concurrent=spec.concurrency_policy == "Forbid",
            running=running,
            starting_deadline_seconds=spec.starting_deadline_seconds,
        )
        status.next_schedule_time = decision.next_time
        status.last_evaluated_schedule_time = decision.cursor
        if decision.missed:
            status.missed_runs = (status.missed_runs or 0) + decision.missed
            MISSED_RUNS.labels(namespace, name).inc(decision.missed)
            catch_up = " and starting one catch-up run" if decision.run_at else ""
            events.append(
                (
                    "Warning",
                    "MissedRuns",
                    f"{decision.missed} scheduled run(s) missed{catch_up}"
                    + (
                        f" (starting deadline {spec.starting_deadline_seconds}s)"
                        if spec.starting_deadline_seconds is not None
                        else ""
                    ),
                )
            )
        if decision.skipped:
            status.missed_runs = (status.missed_runs or 0) + 1
            MISSED_RUNS.labels(namespace, name).inc()
            events.append(
                (
                    "Warning",
                    "RunSkipped",
                    f"run of {decision.cursor:%Y-%m-%dT%H:%M:%SZ} skipped: the previous run "
                    "still runs (concurrencyPolicy Forbid)",
                )
            )
        if decision.run_at is not None:
            backup = scheduled_name(name, decision.run_at)
            stamp = f"{decision.run_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            if self._create_backup(body, backup, {ANNOTATION_SCHEDULED_TIME: stamp}):
                result.created.append(f"{namespace}/{backup}")
                events.append(
                    ("Normal", "BackupStarted", f"scheduled run {stamp}: Backup {backup}")
                )
            status.last_schedule_time = now
        trigger = (meta.get("annotations") or {}).get(ANNOTATION_TRIGGER)
        if trigger and trigger != status.last_trigger:
            backup = triggered_name(name, trigger, status.last_trigger)
            if self._create_backup(body, backup, {ANNOTATION_TRIGGERED_BY: trigger[:253]}):
                result.created.append(f"{namespace}/{backup}")
                events.append(
                    ("Normal", "BackupStarted", f"triggered by {ANNOTATION_TRIGGER}={trigger}")
                )
            status.last_trigger = trigger
            status.last_schedule_time = now

        # Retention and clean-up of failed runs: only with a Ready location.
        if location_ready:
            self._retention(body, spec, status, mine, now, result, events)

        # Ready.
        ready: tuple[Literal["True", "False"], str, str]
        if problem is not None:
            ready = ("False", problem[0], problem[1])
        elif rpo_message:
            ready = ("False", "RPOViolated", rpo_message)
        elif spec.suspend:
            ready = ("True", "Suspended", "valid; suspended: no scheduled runs")
        elif schedule is None:
            ready = ("True", "OnDemand", "valid; no schedule: runs on demand only")
        else:
            when = f"{decision.next_time:%Y-%m-%dT%H:%M:%SZ}" if decision.next_time else "never"
            ready = ("True", "Scheduled", f"next run {when} ({spec.schedule} {spec.time_zone})")
        status.conditions = set_condition(
            status.conditions,
            "Ready",
            ready[0],
            ready[1],
            ready[2],
            generation,
            now,
        )
        status.observed_generation = generation
        POLICY_READY.labels(namespace, name).set(1 if ready[0] == "True" else 0)
        if changed(before.conditions, status.conditions, "Ready"):
            events.append(("Normal" if ready[0] == "True" else "Warning", ready[1], ready[2]))
        wire, old = status.to_wire(), before.to_wire()
        patch: JSON | None = None
        if wire != old:
            patch = wire | {key: None for key in old if key not in wire}
        if patch is not None or events:
            result.writes.append(
                functools.partial(self._write, namespace, name, meta.get("uid"), patch, events)
            )
        return decision.next_time

    def _write(
        self,
        namespace: str,
        name: str,
        uid: str | None,
        patch: JSON | None,
        events: list[tuple[str, str, str]],
    ) -> None:
        if patch is not None:
            patch_status(self.clients.custom, POLICY, namespace, name, patch)
        for type_, reason, message in events:
            post_event(
                self.clients.core,
                POLICY.kind,
                namespace,
                name,
                uid,
                "Normal" if type_ == "Normal" else "Warning",
                reason,
                message,
            )

    def _flush(self, writes: list[Callable[[], None]]) -> None:
        """Write the statuses and events of one pass in parallel: one at a time, a pass that
        changes a thousand policies spends most of its time waiting for the API server."""
        if not writes:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="policy-status")
        for future in [self._writer.submit(write) for write in writes]:
            try:
                future.result()
            except Exception:  # one failed write must not stop the others
                log.exception("writing a policy's status failed")

    def _create_backup(self, policy: JSON, name: str, annotations: dict[str, str]) -> bool:
        """Create the Backup of a run; False when it exists already (the run was started)."""
        meta = policy["metadata"]
        body = {
            "apiVersion": API_VERSION,
            "kind": BACKUP.kind,
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                # Only our own label: never the policy's labels or annotations, so Argo CD
                # tracking (argocd.argoproj.io/*, app.kubernetes.io/instance) is not copied.
                "labels": {LABEL_POLICY: meta["name"]},
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": POLICY.kind,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {"policyRef": {"name": meta["name"]}},
        }
        try:
            self.clients.rest.create(custom_path(BACKUP.plural, meta["namespace"]), body)
        except ApiError as err:
            if err.status == 409:
                return False
            raise
        return True

    def _retention(
        self,
        body: JSON,
        spec: BackupPolicySpec,
        status: BackupPolicyStatus,
        mine: list[BackupView],
        now: datetime,
        result: TickResult,
        events: list[tuple[str, str, str]],
    ) -> None:
        finished = sorted((b for b in mine if b.finished), key=lambda b: b.sort_key)
        grace = retention.DEFAULT_FAILED_GRACE
        if spec.retention and spec.retention.failed_backup_grace_period:
            grace = parse_duration(spec.retention.failed_backup_grace_period)
        failed = [
            retention.Candidate(b.name, b.completed or b.time, successful=False)
            for b in finished
            if b.phase == "Failed"
        ]
        views = {b.name: b for b in mine}
        for name in retention.expired_failures(failed, now, grace):
            if self._delete(views[name].body, "FailedExpired", result):
                events.append(("Normal", "FailedBackupDeleted", f"failed Backup {name} deleted"))
        if not finished or finished[-1].phase != "Succeeded":
            return  # never after a failed run
        newest = finished[-1]
        if spec.retention is None or status.last_retention_backup == newest.name:
            return
        candidates = [
            retention.Candidate(b.name, b.time, successful=True)
            for b in finished
            if b.phase == "Succeeded"
        ]
        decision = retention.select(
            candidates, spec.retention, Schedule.parse("@daily", spec.time_zone).zone
        )
        deleted = [
            n
            for n in decision.delete
            if n != newest.name and self._delete(views[n].body, "Retention", result)
        ]
        if len(deleted) == len([n for n in decision.delete if n != newest.name]):
            status.last_retention_backup = newest.name
        if deleted:
            events.append(
                (
                    "Normal",
                    "RetentionApplied",
                    f"deleted {len(deleted)} backup(s) with their data: {', '.join(deleted)}",
                )
            )

    # ---- prune ------------------------------------------------------------------------
    def _prune_due(
        self,
        locations: dict[tuple[str, str], JSON],
        backups: list[BackupView],
        now: datetime,
        result: TickResult,
    ) -> None:
        interval = _prune_interval()
        busy = {
            (b.body["metadata"]["namespace"], (b.body.get("status") or {}).get("storageLocation"))
            for b in backups
            if not b.finished
        }
        for (namespace, name), body in locations.items():
            key = f"{namespace}/{name}"
            last = self._pruned.setdefault(key, now)  # first prune one interval after start
            if now - last < interval or key in self._pruning:
                continue
            spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
            if spec.access_mode != "ReadWrite" or _location_problem(body) is not None:
                continue
            if (namespace, name) in busy or (namespace, None) in busy:
                continue  # never while a backup of this repository runs
            self._pruned[key] = now
            self._pruning.add(key)
            result.pruned.append(key)
            threading.Thread(
                target=self._prune, args=(namespace, name), name=f"prune-{key}", daemon=True
            ).start()

    def _prune(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        try:
            location = load_location(self.clients, namespace, name, need_write=True)
            prune_repository(location, namespace)
            PRUNES.labels(namespace, name, "Succeeded").inc()
            log.info("pruned the repository of %s", key)
        except (RunError, Exception):
            PRUNES.labels(namespace, name, "Failed").inc()
            log.exception("prune of %s failed", key)
        finally:
            self._pruning.discard(key)


def _location_problem(body: JSON | None) -> tuple[str, str] | None:
    if body is None:
        return ("LocationNotFound", "does not exist")
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "not probed yet"
        return ("LocationNotReady", f"not Ready ({why})")
    return None


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 60}m{seconds % 60}s"


def delete_policy_backups(clients: Clients, namespace: str, policy: str) -> int:
    """deletionPolicy Delete: delete every backup of the policy with its data; returns how
    many. Raises DeletionBlocked when one cannot be deleted now."""
    path = custom_path(BACKUP.plural, namespace)
    count = 0
    for page in clients.rest.list_pages(path):
        for body in page:
            labelled = (body["metadata"].get("labels") or {}).get(LABEL_POLICY)
            ref = ((body.get("spec") or {}).get("policyRef") or {}).get("name")
            if policy in (labelled, ref):
                delete_backup(clients, body, "PolicyDeleted")
                count += 1
    return count
