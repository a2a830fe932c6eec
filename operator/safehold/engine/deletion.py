"""The one path that deletes a backup's data: retention, expired failures, explicit delete
requests, ttl and policies with deletionPolicy Delete all go through delete_backup().

Order: restic forget of the backup's snapshots, then its catalog folder, then the Backup
object, so a crash half-way leaves at worst a catalog entry or object whose snapshots are
already gone (the next attempt finishes the job), never a restorable-looking backup that lost
only its manifest. Nothing is deleted unless the location is Ready and writable.

Repository maintenance lives here too: `restic prune` per repository, never while a backup of
that repository runs, after `restic unlock` has removed stale locks (restic removes only locks
of dead processes or older than 30 minutes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from safehold.api.backup import BackupStatus
from safehold.api.kinds import BACKUP
from safehold.config import LABEL_POLICY, scratch_dir
from safehold.engine.common import RunError, custom_path, load_location
from safehold.kube.clients import Clients
from safehold.kube.locations import ResolvedLocation
from safehold.kube.rest import ApiError
from safehold.metrics import RETENTION_DELETIONS
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, delete_manifest, read_manifest
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
JSON = dict[str, Any]

# restic waits this long for another process's lock (e.g. a running backup) before failing.
RETRY_LOCK = "2m"

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextmanager
def repository_lock(location: ResolvedLocation, namespace: str) -> Iterator[None]:
    """One deleting or pruning operation per repository at a time in this process."""
    layout = location.s3.layout
    key = f"{location.s3.endpoint}|{layout.bucket}|{layout.repository_key(namespace)}"
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        yield


class DeletionBlocked(Exception):
    """The backup cannot be deleted now (location not Ready, still running); retried later."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def location_of(body: JSON) -> str | None:
    """The location a Backup was written to (status, else its inline spec)."""
    status = body.get("status") or {}
    return status.get("storageLocation") or (body.get("spec") or {}).get("storageLocation")


def snapshot_ids(manifest: BackupManifest | None, status: BackupStatus) -> list[str]:
    """Every restic snapshot a backup owns: its export, volumes and databases."""
    ids: list[str | None] = []
    for source in (manifest, status):
        if source is None:
            continue
        ids.append(source.resources.snapshot_id if source.resources else None)
        ids += [v.snapshot_id for v in source.volumes]
        ids += [d.snapshot_id for d in source.databases]
        ids += [s for d in source.databases for s in d.snapshots]
    return sorted({i for i in ids if i})


def delete_backup(clients: Clients, body: JSON, reason: str) -> list[str]:
    """Delete a finished backup's snapshots, catalog entry and object; returns the snapshot
    ids forgotten. Raises DeletionBlocked when it cannot be done safely now."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = BackupStatus.model_validate(body.get("status") or {})
    if status.phase in ("Running",):
        raise DeletionBlocked("BackupRunning", f"backup {namespace}/{name} is still running")
    location_name = location_of(body)
    forgotten: list[str] = []
    if location_name and (status.storage_path or status.phase != "New"):
        try:
            location = load_location(clients, namespace, location_name, need_write=True)
        except RunError as err:
            if err.reason != "LocationNotFound" or status.storage_path:
                raise DeletionBlocked(err.reason, str(err)) from None
        else:
            forgotten = _delete_data(location, namespace, name, status)
    try:
        clients.rest.delete(custom_path(BACKUP.plural, namespace, name))
    except ApiError as err:
        if err.status != 404:
            raise
    policy = (meta.get("labels") or {}).get(LABEL_POLICY, "")
    RETENTION_DELETIONS.labels(namespace, policy, reason).inc()
    log.info(
        "deleted backup %s/%s (%s): %d snapshot(s) forgotten",
        namespace,
        name,
        reason,
        len(forgotten),
    )
    return forgotten


def _delete_data(
    location: ResolvedLocation, namespace: str, name: str, status: BackupStatus
) -> list[str]:
    s3 = make_client(location.s3)
    manifest = read_manifest(s3, location.s3.layout, namespace, name)
    wanted = snapshot_ids(manifest, status)
    repo = location.repository(namespace, str(scratch_dir() / "restic-cache"))
    forgotten: list[str] = []
    with repository_lock(location, namespace):
        if wanted and restic.is_initialized(repo):
            present = {s["id"] for s in restic.snapshots(repo)}
            forgotten = [i for i in wanted if i in present]
            if forgotten:
                restic.run(repo, ["forget", "--retry-lock", RETRY_LOCK, *forgotten], timeout=900)
        delete_manifest(s3, location.s3.layout, namespace, name)
    return forgotten


def prune_repository(location: ResolvedLocation, namespace: str) -> None:
    """Clear stale locks, then free the data of forgotten snapshots (exclusive lock)."""
    repo = location.repository(namespace, str(scratch_dir() / "restic-cache"))
    with repository_lock(location, namespace):
        if not restic.is_initialized(repo):
            return
        restic.run(repo, ["unlock"], timeout=300)  # removes stale locks only
        restic.run(repo, ["prune", "--retry-lock", RETRY_LOCK], timeout=6 * 3600)
