"""Repository maintenance: `restic prune` per repository once per prune interval, never while a
backup of that repository runs, after `restic unlock` has removed stale locks (restic removes
only locks of dead processes or older than 30 minutes).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from safehold.api.base import JSON
from safehold.api.durations import parse_duration
from safehold.api.location import BackupStorageLocationSpec
from safehold.engine.deletion import RETRY_LOCK
from safehold.engine.locations import load_location
from safehold.engine.metrics import PRUNES
from safehold.engine.settings import restic_cache_dir
from safehold.kube.clients import Clients
from safehold.planning.locations import location_problem
from safehold.planning.policy import BackupView
from safehold.storage import restic
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import delete_prefix, make_client

log = logging.getLogger(__name__)


def prune_interval() -> timedelta:
    return parse_duration(os.environ.get("SAFEHOLD_PRUNE_INTERVAL") or "24h")


SCRATCH_LIFETIME = timedelta(hours=24)


def repositories_of(location: ResolvedLocation, namespace: str) -> list[str]:
    """Keys of every repository of a namespace's backups in the location: its own and the
    per-namespace ones of its volume data."""
    layout = location.s3.layout
    prefix = layout.key("namespace-repositories", namespace) + "/"
    pages = (
        make_client(location.s3)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=layout.bucket, Prefix=prefix, Delimiter="/")
    )
    found = [
        layout.namespace_repository(namespace, str(p["Prefix"])[len(prefix) :].strip("/"))
        for page in pages
        for p in page.get("CommonPrefixes", [])
    ]
    return [layout.repository(namespace), *sorted(found)]


def remove_stale_scratch(location: ResolvedLocation, now: datetime) -> int:
    """Scratch repositories a restore left behind (the operator stopped mid-way): removed a
    day after they were made. Returns how many."""
    layout, s3 = location.s3.layout, make_client(location.s3)
    prefix = layout.key("scratch-repositories") + "/"
    removed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=layout.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = str(item["Key"])
            if key.endswith("/config") and now - item["LastModified"] > SCRATCH_LIFETIME:
                delete_prefix(s3, layout.bucket, key.removesuffix("config"))
                removed += 1
    return removed


def prune_repository(location: ResolvedLocation, namespace: str) -> None:
    """Clear stale locks, then free the data of forgotten snapshots (exclusive lock), in every
    repository of the namespace."""
    with restic.maintenance_lock(location.repository(namespace)):
        for key in repositories_of(location, namespace):
            repo = location.repository_at(key, restic_cache_dir())
            if not restic.is_initialized(repo):
                continue
            restic.run(repo, ["unlock"], timeout=300)  # removes stale locks only
            restic.run(repo, ["prune", "--retry-lock", RETRY_LOCK], timeout=6 * 3600)
    remove_stale_scratch(location, datetime.now(UTC))


class LocationWork:
    """The prune or repository check running on each location (namespace/name): never both
    at once, since a prune deletes pack files a check would then miss."""

    def __init__(self) -> None:
        self._running: dict[str, str] = {}
        self._lock = threading.Lock()

    def begin(self, key: str, what: str) -> bool:
        """Claim the location for `what`; False when something runs on it already."""
        with self._lock:
            if key in self._running:
                return False
            self._running[key] = what
            return True

    def end(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)

    def running(self, what: str) -> int:
        """How many locations run `what` now."""
        with self._lock:
            return sum(1 for w in self._running.values() if w == what)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._running


def busy_locations(backups: Sequence[BackupView]) -> set[tuple[str, str | None]]:
    """(namespace, location) of every Backup still running (location None: not known yet)."""
    return {
        (b.namespace, (b.body.get("status") or {}).get("storageLocation"))
        for b in backups
        if not b.finished
    }


class Maintenance:
    """Remembers when each location was pruned and prunes in background threads."""

    def __init__(self, clients: Clients, work: LocationWork | None = None) -> None:
        self.clients = clients
        self.work = work or LocationWork()
        self._pruned: dict[str, datetime] = {}

    def prune_due(
        self,
        locations: Mapping[tuple[str, str], JSON],
        backups: Sequence[BackupView],
        now: datetime,
    ) -> list[str]:
        """Start the prunes that are due; returns the locations (namespace/name) started."""
        interval = prune_interval()
        busy = busy_locations(backups)
        started = []
        for (namespace, name), body in locations.items():
            key = f"{namespace}/{name}"
            last = self._pruned.setdefault(key, now)  # first prune one interval after start
            if now - last < interval or key in self.work:
                continue
            spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
            if spec.access_mode != "ReadWrite" or location_problem(body) is not None:
                continue
            if (namespace, name) in busy or (namespace, None) in busy:
                continue  # never while a backup of this repository runs
            if not self.work.begin(key, "prune"):
                continue
            self._pruned[key] = now
            started.append(key)
            threading.Thread(
                target=self._prune, args=(namespace, name), name=f"prune-{key}", daemon=True
            ).start()
        return started

    def _prune(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        try:
            location = load_location(self.clients, namespace, name, need_write=True)
            prune_repository(location, namespace)
            PRUNES.labels(namespace, name, "Succeeded").inc()
            log.info("pruned the repository of %s", key)
        except Exception:
            PRUNES.labels(namespace, name, "Failed").inc()
            log.exception("prune of %s failed", key)
        finally:
            self.work.end(key)
