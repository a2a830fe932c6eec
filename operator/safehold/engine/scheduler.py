"""The scheduling loop: one operator-wide loop (not a Kopf timer per object, which would force
a finalizer onto every policy) that, on every tick and whenever a policy or Backup changes:

- evaluates each BackupPolicy (planning/policy.py: validity, Ready, RPO, due runs) and writes
  its status;
- starts due runs as Backups with deterministic names, each carrying the policy's content at
  that moment, so a crash between creating a Backup and recording it never starts a run twice
  and a later edit of the policy never changes a run already created;
- after each new successful run of a policy applies its retention (engine/retention.py);
- handles explicit delete requests and expired ttls of any Backup (engine/deletion.py);
- prunes each location's repository once per prune interval (engine/maintenance.py);
- checks each location's repositories once per repository check interval
  (engine/location_checks.py).

`Scheduler.tick(now)` is one pass with an injectable clock; tests call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from safehold.api.base import JSON
from safehold.api.durations import parse_duration
from safehold.api.kinds import BACKUP, LOCATION, POLICY, VERIFICATION
from safehold.api.policy import BackupPolicySpec
from safehold.engine import drill_scratch
from safehold.engine.deletion import Deleter
from safehold.engine.location_checks import LocationChecks
from safehold.engine.maintenance import Maintenance
from safehold.engine.metrics import (
    LAST_SUCCESS,
    MISSED_RUNS,
    POLICY_READY,
    RPO_VIOLATED,
    observe_rto_target,
    seed_last_drill,
)
from safehold.engine.retention import apply_retention
from safehold.engine.settings import operator_namespace
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.resources import list_all, patch_status
from safehold.kube.rest import ApiError
from safehold.planning.builders import policy_backup, policy_drill
from safehold.planning.conditions import changed
from safehold.planning.drill_schedule import DrillView
from safehold.planning.meta import policy_of
from safehold.planning.policy import (
    BackupView,
    Evaluation,
    Event,
    EventType,
    RunRequest,
    evaluate,
)

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

TICK_SECONDS = 10.0
DEBOUNCE_SECONDS = 0.5
WRITE_WORKERS = 8


@dataclass
class TickResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    """Locations whose repository check started in this pass."""
    next_due: datetime | None = None
    writes: list[Callable[[], None]] = field(default_factory=list)
    """Status patches and events of the pass, made together at its end."""


class Scheduler:
    def __init__(self, clients: Clients, clock: Clock | None = None) -> None:
        self.clients = clients
        self.clock = clock or (lambda: datetime.now(UTC))
        self.deleter = Deleter(clients)
        self.maintenance = Maintenance(clients)
        self.checks = LocationChecks(clients, self.maintenance.work)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        backups = [BackupView.of(b, now) for b in list_all(self.clients.custom, BACKUP)]
        locations = {
            (b["metadata"]["namespace"], b["metadata"]["name"]): b
            for b in list_all(self.clients.custom, LOCATION)
        }
        by_policy: dict[tuple[str, str], list[BackupView]] = defaultdict(list)
        for view in backups:
            policy = policy_of(view.body)
            if policy:
                by_policy[(view.namespace, policy)].append(view)
        drills: dict[tuple[str, str], list[DrillView]] = defaultdict(list)
        for body in list_all(self.clients.custom, VERIFICATION):
            policy = policy_of(body)
            if policy:
                drills[(body["metadata"]["namespace"], policy)].append(DrillView.of(body))
        result.deleted += self.deleter.requested(backups, now)
        for body in policies:
            if body["metadata"].get("deletionTimestamp"):
                continue
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            location = locations.get((key[0], (body.get("spec") or {}).get("storageLocation")))
            try:
                due = self._policy(
                    body, by_policy.get(key, []), location, now, result, drills.get(key, [])
                )
            except Exception:  # one broken policy must not stop the others
                log.exception("scheduling policy %s/%s failed", *key)
                continue
            if due is not None and (result.next_due is None or due < result.next_due):
                result.next_due = due
        self._flush(result.writes)
        result.pruned = self.maintenance.prune_due(locations, backups, now)
        result.checked = self.checks.check_due(locations, backups, now)
        try:
            drill_scratch.sweep(self.clients.rest, now)
        except Exception:  # the next pass tries again
            log.exception("sweeping drill scratch namespaces failed")
        return result

    def _policy(
        self,
        body: JSON,
        mine: list[BackupView],
        location: JSON | None,
        now: datetime,
        result: TickResult,
        drills: list[DrillView],
    ) -> datetime | None:
        meta = body["metadata"]
        namespace = meta["namespace"]
        evaluation = evaluate(body, mine, location, now, operator_namespace(), drills)
        self._record_metrics(namespace, meta["name"], evaluation)
        events = list(evaluation.events)
        spec = evaluation.spec
        for run in evaluation.runs if spec is not None else []:
            if spec is not None and self._create_backup(body, spec, run):
                result.created.append(f"{namespace}/{run.backup}")
                events.append(run.started)
        if spec is not None:
            events += self._drills(body, spec, evaluation)
        if evaluation.location_ready:
            retention_events, deleted = apply_retention(self.deleter, evaluation, mine, now)
            events += retention_events
            result.deleted += deleted
        if changed(evaluation.before.conditions, evaluation.status.conditions, "Ready"):
            kind: EventType = "Normal" if evaluation.ready[0] == "True" else "Warning"
            events.append(Event(kind, evaluation.ready[1], evaluation.ready[2]))
        wire, old = evaluation.status.to_wire(), evaluation.before.to_wire()
        patch = wire | {key: None for key in old if key not in wire} if wire != old else None
        if patch is not None or events:
            result.writes.append(
                functools.partial(
                    self._write, namespace, meta["name"], meta.get("uid"), patch, events
                )
            )
        return evaluation.next_time

    @staticmethod
    def _record_metrics(namespace: str, name: str, evaluation: Evaluation) -> None:
        newest = evaluation.newest
        if newest is not None and newest.completed is not None:
            LAST_SUCCESS.labels(namespace, name).set(newest.completed.timestamp())
        if evaluation.missed:
            MISSED_RUNS.labels(namespace, name).inc(evaluation.missed)
        RPO_VIOLATED.labels(namespace, name).set(1 if evaluation.status.rpo_met is False else 0)
        POLICY_READY.labels(namespace, name).set(1 if evaluation.ready[0] == "True" else 0)
        verification = evaluation.spec.verification if evaluation.spec else None
        target = verification.rto_target if verification else None
        observe_rto_target(
            namespace, name, parse_duration(target).total_seconds() if target else None
        )
        seed_last_drill(namespace, name, evaluation.status.last_verification)

    def _write(
        self,
        namespace: str,
        name: str,
        uid: str | None,
        patch: JSON | None,
        events: list[Event],
    ) -> None:
        if patch is not None:
            patch_status(self.clients.custom, POLICY, namespace, name, patch)
        for event in events:
            post_event(
                self.clients.core,
                POLICY.kind,
                namespace,
                name,
                uid,
                event.type,
                event.reason,
                event.message,
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

    def _drills(self, policy: JSON, spec: BackupPolicySpec, evaluation: Evaluation) -> list[Event]:
        """Create the drills due, delete those past the history limits."""
        namespace = policy["metadata"]["namespace"]
        events = []
        decision = evaluation.drills
        if decision.skipped_no_backup:
            events.append(
                Event("Warning", "DrillSkipped", "scheduled drill skipped: no successful backup")
            )
        for request in decision.requests:
            body = policy_drill(policy, request.name, request.scheduled, spec)
            try:
                self.clients.rest.create(VERIFICATION.path(namespace), body)
            except ApiError as err:
                if err.status != 409:
                    raise
                continue
            events.append(
                Event(
                    "Normal",
                    "DrillStarted",
                    f"scheduled drill {request.scheduled}: BackupVerification {request.name}",
                )
            )
        for name in decision.delete:
            self.clients.rest.delete_quietly(VERIFICATION.path(namespace, name))
        return events

    def _create_backup(self, policy: JSON, spec: BackupPolicySpec, run: RunRequest) -> bool:
        """Create the Backup of a run; False when it exists already (the run was started)."""
        body = policy_backup(policy, run.backup, run.annotations, spec)
        try:
            self.clients.rest.create(BACKUP.path(policy["metadata"]["namespace"]), body)
        except ApiError as err:
            if err.status == 409:
                return False
            raise
        return True
