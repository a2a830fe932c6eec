"""The one path that deletes a backup's data: retention, expired failures, explicit delete
requests, ttl and policies with deletionPolicy Delete all go through `delete_backup()`.

Order: restic forget of the backup's snapshots, then its catalog folder, then the Backup
object, so a crash half-way leaves at worst a catalog entry or object whose snapshots are
already gone (the next attempt finishes the job), never a restorable-looking backup that lost
only its manifest. Nothing is deleted unless the location is Ready and writable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from safehold.api.backup import BackupStatus
from safehold.api.base import JSON
from safehold.api.errors import Failure
from safehold.api.kinds import BACKUP
from safehold.api.labels import ANNOTATION_DELETE_REQUESTED, ANNOTATION_SYNCED, LABEL_POLICY
from safehold.engine.errors import RunError
from safehold.engine.locations import load_location
from safehold.engine.metrics import RETENTION_DELETIONS
from safehold.engine.settings import operator_namespace, restic_cache_dir
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.rest import ApiError
from safehold.planning.meta import parse_time, policy_of
from safehold.planning.policy import BackupView
from safehold.planning.trust import Untrusted
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, delete_manifest, read_manifest
from safehold.storage.layout import BucketLayout
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)

# restic waits this long for another process's lock (e.g. a running backup) before failing.
RETRY_LOCK = "2m"


class DeletionBlocked(Failure):
    """The backup cannot be deleted now (location not Ready, still running); retried later."""


def location_of(body: JSON) -> str | None:
    """The location a Backup was written to (status, else its inline spec)."""
    status = body.get("status") or {}
    return status.get("storageLocation") or (body.get("spec") or {}).get("storageLocation")


def snapshots_by_repository(
    manifest: BackupManifest | None, status: BackupStatus, namespace: str
) -> dict[str, set[str]]:
    """Every restic snapshot a backup owns, by the repository (key below the location's
    prefix) holding it: its export and databases in the namespace's repository, its volumes
    in theirs."""
    own = BucketLayout.repository(namespace)
    found: dict[str, set[str]] = {}
    for source in (manifest, status):
        if source is None:
            continue
        ids = [source.resources.snapshot_id if source.resources else None]
        ids += [d.snapshot_id for d in source.databases]
        ids += [s for d in source.databases for s in d.snapshots]
        found.setdefault(own, set()).update(i for i in ids if i)
        for volume in source.volumes:
            if volume.snapshot_id:
                found.setdefault(volume.repository or own, set()).add(volume.snapshot_id)
    return {key: ids for key, ids in found.items() if ids}


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
                raise DeletionBlocked(err.reason, err.message) from None
        else:
            synced = ANNOTATION_SYNCED in (meta.get("annotations") or {})
            owner = status.run_uid or (None if synced else meta.get("uid"))
            forgotten = _delete_data(location, namespace, name, status, owner)
    try:
        clients.rest.delete(BACKUP.path(namespace, name))
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
    location: ResolvedLocation,
    namespace: str,
    name: str,
    status: BackupStatus,
    owner: str | None,
) -> list[str]:
    """Forget the backup's snapshots and remove its catalog entry, when that entry is this
    run's (`owner`: the run's UID; None for Backups re-discovered before runs were told apart).
    The entry of an earlier Backup of the same name is never touched."""
    s3 = make_client(location.s3)
    try:
        manifest = read_manifest(
            s3, location.s3.layout, namespace, name, privileged=namespace == operator_namespace()
        )
    except Untrusted:  # the status alone says what the backup owns
        manifest = None
    mine = manifest is None or owner is None or manifest.uid in (None, owner)
    if not mine:
        log.warning(
            "backup %s/%s: the catalog entry of that name belongs to run %s; kept",
            namespace,
            name,
            manifest.uid if manifest else "?",
        )
    wanted = snapshots_by_repository(manifest if mine else None, status, namespace)
    forgotten: list[str] = []
    with restic.maintenance_lock(location.repository(namespace)):
        for key, ids in sorted(wanted.items()):
            repo = location.repository_at(key, restic_cache_dir())
            if not restic.is_initialized(repo):
                continue
            present = {s["id"] for s in restic.snapshots(repo)}
            gone = sorted(ids & present)
            if gone:
                restic.run(repo, ["forget", "--retry-lock", RETRY_LOCK, *gone], timeout=900)
            forgotten += gone
        if mine:
            delete_manifest(s3, location.s3.layout, namespace, name)
    return forgotten


def delete_policy_backups(clients: Clients, namespace: str, policy: str) -> int:
    """deletionPolicy Delete: delete every backup of the policy with its data; returns how
    many. Raises DeletionBlocked when one cannot be deleted now."""
    count = 0
    for page in clients.rest.list_pages(BACKUP.path(namespace)):
        for body in page:
            if policy_of(body) == policy:
                delete_backup(clients, body, "PolicyDeleted")
                count += 1
    return count


class Deleter:
    """Deletes backups for the scheduling loop: a deletion that is blocked is retried on the
    next pass, with one Warning event until it goes through."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self._blocked: set[str] = set()

    def delete(self, body: JSON, reason: str) -> bool:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        try:
            delete_backup(self.clients, body, reason)
        except DeletionBlocked as err:
            if key not in self._blocked:
                self._blocked.add(key)
                log.warning("deletion of backup %s postponed: %s", key, err)
                post_event(
                    self.clients.core,
                    BACKUP.kind,
                    meta["namespace"],
                    meta["name"],
                    meta.get("uid"),
                    "Warning",
                    "DeletionPostponed",
                    err.message,
                )
            return False
        except Exception:
            log.exception("deletion of backup %s failed", key)
            return False
        self._blocked.discard(key)
        return True

    def requested(self, backups: Iterable[BackupView], now: datetime) -> list[str]:
        """Delete Backups that ask for it (annotation) or whose ttl expired; returns them."""
        deleted = []
        for view in backups:
            annotations = view.body["metadata"].get("annotations") or {}
            expires = parse_time((view.body.get("status") or {}).get("expiresAt"))
            if annotations.get(ANNOTATION_DELETE_REQUESTED) == "true":
                reason = "Requested"
            elif expires is not None and expires <= now and view.finished:
                reason = "Expired"
            else:
                continue
            if self.delete(view.body, reason):
                deleted.append(f"{view.namespace}/{view.name}")
        return deleted
