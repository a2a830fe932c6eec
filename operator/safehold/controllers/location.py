"""BackupStorageLocation: probe the bucket and repository, report Ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import LOCATION
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.engine.catalog_sync import sync_catalog
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.locations import ResolvedLocation, resolve_location
from safehold.kube.resources import list_all, patch_status
from safehold.kube.secrets import SecretProblem
from safehold.metrics import LOCATION_PROBES, LOCATION_READY
from safehold.planning.conditions import changed
from safehold.planning.locations import probe_due, status_after_probe
from safehold.storage.probe import LocationProbe, probe_location

log = logging.getLogger(__name__)
RESYNC_TICK_SECONDS = 10.0

# Locations being probed right now: the create handler and the resync loop may pick up the
# same new location at once, and a second concurrent probe would only repeat the first.
_probing: set[tuple[str, str]] = set()
_probing_lock = threading.Lock()


def reconcile(
    clients: Clients, body: dict[str, Any], on_ready_changed: Callable[[], None] | None = None
) -> LocationProbe | None:
    """Probe one location and write its status; returns the probe outcome, or None when the
    location is being probed already. `on_ready_changed` is called when Ready changed (the
    scheduler re-evaluates the policies that use the location)."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    with _probing_lock:
        if key in _probing:
            return None
        _probing.add(key)
    try:
        return _reconcile(clients, body, on_ready_changed)
    finally:
        with _probing_lock:
            _probing.discard(key)


def _reconcile(
    clients: Clients, body: dict[str, Any], on_ready_changed: Callable[[], None] | None
) -> LocationProbe:
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    spec = BackupStorageLocationSpec.model_validate(body.get("spec", {}))
    before = BackupStorageLocationStatus.model_validate(body.get("status") or {})
    synced: int | None = None
    try:
        resolved = resolve_location(clients.core, namespace, name, spec)
        outcome = probe_location(resolved)
        if outcome.ok and outcome.repository_initialized:
            synced = _sync(clients, resolved)
    except SecretProblem as err:
        outcome = LocationProbe(False, err.reason, str(err))
    now = datetime.now(UTC)
    after = status_after_probe(
        before,
        outcome.ok,
        outcome.reason,
        outcome.message,
        outcome.repository_initialized,
        generation,
        now,
    )
    if synced is not None:
        after.last_sync_time = now
    patch_status(clients.custom, LOCATION, namespace, name, after.to_wire())
    if synced:
        post_event(
            clients.core,
            LOCATION.kind,
            namespace,
            name,
            meta.get("uid"),
            "Normal",
            "BackupsDiscovered",
            f"re-created {synced} Backup(s) found in storage",
        )
    LOCATION_READY.labels(namespace, name).set(1 if outcome.ok else 0)
    LOCATION_PROBES.labels(namespace, name, outcome.reason).inc()
    if changed(before.conditions, after.conditions, "Ready"):
        post_event(
            clients.core,
            LOCATION.kind,
            namespace,
            name,
            meta.get("uid"),
            "Normal" if outcome.ok else "Warning",
            outcome.reason,
            outcome.message,
        )
        log.info("location %s/%s Ready=%s reason=%s", namespace, name, outcome.ok, outcome.reason)
        if on_ready_changed is not None:
            on_ready_changed()
    return outcome


def _sync(clients: Clients, resolved: ResolvedLocation) -> int | None:
    try:
        return sync_catalog(clients, resolved)
    except Exception:  # a broken manifest must not make the location un-Ready
        log.exception("catalog sync of %s/%s failed", resolved.namespace, resolved.name)
        return None


@kopf.on.resume(GROUP, VERSION, LOCATION.plural)
@kopf.on.create(GROUP, VERSION, LOCATION.plural)
@kopf.on.update(GROUP, VERSION, LOCATION.plural, field="spec")
def location_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    scheduler = getattr(memo, "scheduler", None)
    reconcile(memo.clients, dict(body), scheduler.wake if scheduler is not None else None)


def resync_once(
    clients: Clients,
    now: datetime | None = None,
    on_ready_changed: Callable[[], None] | None = None,
) -> int:
    """Probe every location whose sync period (or failing re-probe interval) has passed."""
    now = now or datetime.now(UTC)
    probed = 0
    for body in list_all(clients.custom, LOCATION):
        try:
            spec = BackupStorageLocationSpec.model_validate(body.get("spec", {}))
            status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
            if probe_due(spec, status, body["metadata"].get("generation"), now) and reconcile(
                clients, body, on_ready_changed
            ):
                probed += 1
        except Exception:  # one broken object must not stop the others' resync
            log.exception(
                "resync of location %s/%s failed",
                body["metadata"].get("namespace"),
                body["metadata"].get("name"),
            )
    return probed


async def resync_loop(
    clients: Clients, stop: asyncio.Event, on_ready_changed: Callable[[], None] | None = None
) -> None:
    """Re-probe locations periodically. One loop for all objects, instead of a Kopf timer
    per object: timers force a finalizer onto every object, which blocks deletion whenever
    the operator is not running."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(resync_once, clients, None, on_ready_changed)
        except Exception:
            log.exception("location resync failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RESYNC_TICK_SECONDS)
