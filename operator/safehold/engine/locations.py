"""BackupStorageLocations: the lookup every run starts with, and the reconcile loop that probes
each location, writes its Ready condition and re-discovers backups from its catalog.

One loop re-probes every location whose sync period has passed, instead of a Kopf timer per
object: timers force a finalizer onto every object, which blocks deletion whenever the
operator is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus

from pydantic import ValidationError

from safehold.api.base import JSON
from safehold.api.errors import Failure, invalid_spec
from safehold.api.kinds import LOCATION
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.engine.catalog_sync import SyncResult, sync_catalog
from safehold.engine.errors import RunError
from safehold.engine.metrics import INVALID_MANIFESTS, LOCATION_PROBES, LOCATION_READY
from safehold.engine.settings import operator_namespace
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.locations import resolve_location
from safehold.kube.resources import list_all
from safehold.kube.rest import ApiError
from safehold.kube.secrets import SecretProblem
from safehold.planning.conditions import changed, get_condition
from safehold.planning.locations import (
    NEWLINE_CONDITION,
    location_problem,
    password_with_newline,
    probe_due,
    status_after_probe,
)
from safehold.storage.location import ResolvedLocation
from safehold.storage.probe import LocationProbe, probe_location

log = logging.getLogger(__name__)
RESYNC_TICK_SECONDS = 10.0


def load_location(
    clients: Clients, namespace: str, name: str, *, need_write: bool
) -> ResolvedLocation:
    """A Ready location with its secrets; RunError explains why not."""
    body = clients.rest.get_or_none(LOCATION.path(namespace, name))
    problem = location_problem(body)
    if problem is not None:
        raise RunError(problem[0], f"BackupStorageLocation {namespace}/{name} {problem[1]}")
    assert body is not None
    spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
    if need_write and spec.access_mode != "ReadWrite":
        raise RunError(
            "LocationReadOnly",
            f"BackupStorageLocation {namespace}/{name} is ReadOnly; backups need a ReadWrite one",
        )
    try:
        return resolve_location(
            clients.core, namespace, name, spec, with_newline=password_with_newline(body)
        )
    except SecretProblem as err:
        raise RunError(err.reason, err.message) from None


StatusChange = Callable[[JSON, BackupStorageLocationStatus], BackupStorageLocationStatus | None]
_status_locks: dict[tuple[str, str], threading.Lock] = {}
_status_locks_guard = threading.Lock()
STATUS_ATTEMPTS = 5


def update_status(
    clients: Clients, namespace: str, name: str, change: StatusChange
) -> tuple[JSON, BackupStorageLocationStatus, BackupStorageLocationStatus] | None:
    """Change a location's status from its current state: the probe, a failed run and the
    repository check each own different conditions and fields of one status, whose
    conditions list a merge patch replaces whole. So every writer reads the object afresh,
    applies `change` (None: nothing to write) and patches on that resourceVersion, again
    from a fresh read on a conflict. Returns (object, before, after) when it wrote."""
    with _status_locks_guard:
        lock = _status_locks.setdefault((namespace, name), threading.Lock())
    path = LOCATION.path(namespace, name)
    with lock:
        for _ in range(STATUS_ATTEMPTS):
            body = clients.rest.get_or_none(path)
            if body is None:
                return None
            before = BackupStorageLocationStatus.model_validate(body.get("status") or {})
            after = change(body, before)
            if after is None:
                return None
            version = body["metadata"].get("resourceVersion")
            patch = {"metadata": {"resourceVersion": version}, "status": after.to_wire()}
            try:
                clients.rest.merge_patch(f"{path}/status", patch)
            except ApiError as err:
                if err.status == HTTPStatus.CONFLICT:
                    continue
                if err.status == HTTPStatus.NOT_FOUND:
                    return None
                raise
            return body, before, after
    raise RunError("StatusConflict", f"BackupStorageLocation {namespace}/{name} kept changing")


# Reasons of a failed run that say the object store did not answer.
STORE_DOWN = frozenset({"RepositoryTimeout", "EndpointUnreachable"})


def store_failed(clients: Clients, location: ResolvedLocation, failure: Failure) -> Failure:
    """A run's failure, with the store named when it did not answer; the location then turns
    Ready=False at once (with an Event), not only at its next probe."""
    if failure.reason not in STORE_DOWN:
        return failure
    s3 = location.s3
    where = f"the object store at {s3.endpoint or 'AWS S3'} (bucket {s3.bucket})"
    text = (
        failure.message
        if where in failure.message
        else f"{where} did not answer: {failure.message}"
    )
    named = Failure(failure.reason, text)

    def change(body: JSON, before: BackupStorageLocationStatus) -> BackupStorageLocationStatus:
        generation = body["metadata"].get("generation")
        reason, message, initialized = named.reason, named.message, before.repository_initialized
        now = datetime.now(UTC)
        return status_after_probe(before, False, reason, message, initialized, generation, now)

    written = update_status(clients, location.namespace, location.name, change)
    if written is None:
        return named
    body, before, after = written
    LOCATION_READY.labels(location.namespace, location.name).set(0)
    if changed(before.conditions, after.conditions, "Ready"):
        meta = body["metadata"]
        post_event(
            clients.core,
            LOCATION.kind,
            meta["namespace"],
            meta["name"],
            meta.get("uid"),
            "Warning",
            named.reason,
            named.message,
        )
    return named


class LocationReconciler:
    """Probes locations and writes their status; `on_ready_changed` is called when a
    location's Ready changed (the scheduler re-evaluates the policies that use it)."""

    def __init__(
        self, clients: Clients, on_ready_changed: Callable[[], None] | None = None
    ) -> None:
        self.clients = clients
        self.on_ready_changed = on_ready_changed
        # Locations being probed right now: the create handler and the resync loop may pick
        # up the same new location at once, and a second probe would only repeat the first.
        self._probing: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def reconcile(self, body: JSON) -> LocationProbe | None:
        """Probe one location and write its status; None when it is being probed already."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            if key in self._probing:
                return None
            self._probing.add(key)
        try:
            return self._reconcile(body)
        finally:
            with self._lock:
                self._probing.discard(key)

    def _probe(self, body: JSON) -> tuple[LocationProbe, SyncResult | None]:
        """The probe's outcome, and what the catalog sync did (None: no sync ran)."""
        meta = body["metadata"]
        try:
            spec = BackupStorageLocationSpec.model_validate(body.get("spec", {}))
        except ValidationError as err:  # what an older schema let through: said once
            failure = invalid_spec(err)
            return LocationProbe(False, failure.reason, failure.message), None
        try:
            resolved = resolve_location(self.clients.core, meta["namespace"], meta["name"], spec)
            outcome = probe_location(resolved)
        except SecretProblem as err:
            return LocationProbe(False, err.reason, err.message), None
        if not (outcome.ok and outcome.repository_initialized):
            return outcome, None
        if outcome.with_newline:
            resolved = resolved.newline_variant()
        privileged = meta["namespace"] == operator_namespace()
        try:
            return outcome, sync_catalog(self.clients, resolved, privileged=privileged)
        except Exception:  # the store failing mid-sync must not make the location un-Ready
            log.exception("catalog sync of %s/%s failed", meta["namespace"], meta["name"])
            return outcome, None

    def _reconcile(self, body: JSON) -> LocationProbe:
        meta = body["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
        outcome, synced = self._probe(body)
        now = datetime.now(UTC)

        def change(_: JSON, before: BackupStorageLocationStatus) -> BackupStorageLocationStatus:
            after = status_after_probe(
                before,
                outcome.ok,
                outcome.reason,
                outcome.message,
                outcome.repository_initialized,
                generation,
                now,
                outcome.with_newline,
            )
            if synced is not None:
                after.last_sync_time = now
            return after

        written = update_status(self.clients, namespace, name, change)
        if written is None:  # deleted meanwhile
            return outcome
        _, before, after = written
        if synced is not None:
            self._report_sync(body, synced)
        LOCATION_READY.labels(namespace, name).set(1 if outcome.ok else 0)
        LOCATION_PROBES.labels(namespace, name, outcome.reason).inc()
        if changed(before.conditions, after.conditions, "Ready"):
            self._event(
                body, "Normal" if outcome.ok else "Warning", outcome.reason, outcome.message
            )
            log.info(
                "location %s/%s Ready=%s reason=%s", namespace, name, outcome.ok, outcome.reason
            )
            if self.on_ready_changed is not None:
                self.on_ready_changed()
        newline = get_condition(after.conditions, NEWLINE_CONDITION)
        if newline is not None and changed(before.conditions, after.conditions, NEWLINE_CONDITION):
            self._event(body, "Warning", newline.reason, newline.message)
        return outcome

    def _report_sync(self, body: JSON, synced: SyncResult) -> None:
        meta = body["metadata"]
        INVALID_MANIFESTS.labels(meta["namespace"], meta["name"]).set(len(synced.problems))
        if synced.created:
            message = f"re-created {synced.created} Backup(s) found in storage"
            self._event(body, "Normal", "BackupsDiscovered", message)
        for problem in synced.problems:
            self._event(body, "Warning", problem.reason, f"{problem.key}: {problem.message}")

    def _event(self, body: JSON, type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        post_event(
            self.clients.core,
            LOCATION.kind,
            meta["namespace"],
            meta["name"],
            meta.get("uid"),
            "Normal" if type_ == "Normal" else "Warning",
            reason,
            message,
        )

    def resync_once(self, now: datetime | None = None) -> int:
        """Probe every location whose sync period (or failing re-probe interval) passed."""
        now = now or datetime.now(UTC)
        probed = 0
        for body in list_all(self.clients.custom, LOCATION):
            try:
                status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
                generation = body["metadata"].get("generation")
                try:
                    spec = BackupStorageLocationSpec.model_validate(body.get("spec", {}))
                    due = probe_due(spec, status, generation, now)
                except ValidationError:  # reported once per generation by reconcile
                    due = status.observed_generation != generation
                if due and self.reconcile(body):
                    probed += 1
            except Exception:  # one broken object must not stop the others' resync
                log.exception(
                    "resync of location %s/%s failed",
                    body["metadata"].get("namespace"),
                    body["metadata"].get("name"),
                )
        return probed

    async def loop(self, stop: asyncio.Event) -> None:
        """Re-probe locations periodically until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.resync_once)
            except Exception:
                log.exception("location resync failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESYNC_TICK_SECONDS)
