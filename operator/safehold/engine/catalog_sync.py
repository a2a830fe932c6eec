"""Re-create Backup objects from the catalog, so a new cluster finds every backup in a bucket.

Backups that exist in storage but not in the cluster are created with the annotation
safehold.io/synced-from-storage (the Backup handler leaves those alone) and the status recorded
in their manifest. Nothing is ever deleted here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from safehold.api.backup import BackupStatus
from safehold.api.base import JSON
from safehold.api.kinds import BACKUP
from safehold.api.labels import ANNOTATION_SYNCED, LABEL_POLICY
from safehold.kube.clients import Clients
from safehold.kube.resources import patch_status
from safehold.kube.rest import ApiError
from safehold.planning.builders import backup_object, content_spec
from safehold.planning.runs import Outcome, finished
from safehold.storage.catalog import BackupManifest, list_manifests
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)


def backup_from_manifest(manifest: BackupManifest, location: str) -> tuple[JSON, JSON]:
    """The Backup object and its status for a manifest (pure)."""
    labels = {LABEL_POLICY: manifest.policy} if manifest.policy else {}
    if manifest.content is not None:  # format 2: the run's own content
        spec = content_spec(manifest.content.model_copy(update={"storage_location": location}))
    else:
        spec = {
            "storageLocation": location,
            "selection": {
                "namespaces": manifest.namespaces,
                "includeClusterResources": manifest.included_cluster_resources,
            },
        }
    body = backup_object(
        manifest.name,
        manifest.namespace,
        spec,
        labels=labels,
        annotations={ANNOTATION_SYNCED: location},
    )
    now = manifest.completion_time or datetime.now(UTC)
    outcome: Outcome = "Failed"
    if manifest.phase == "Succeeded":
        outcome = "Succeeded"
    elif manifest.phase == "PartiallyFailed":
        outcome = "PartiallyFailed"
    conditions = finished(
        [],
        outcome,
        manifest.reason or "Completed",
        f"re-discovered in BackupStorageLocation {location}: {manifest.message or manifest.phase}",
        1,
        now,
    )
    status = BackupStatus(
        conditions=conditions,
        phase=manifest.phase,
        storage_location=location,
        policy=manifest.policy,
        start_time=manifest.start_time,
        completion_time=manifest.completion_time,
        resources=manifest.resources,
        volumes=manifest.volumes,
        databases=manifest.databases,
        size_bytes=manifest.size_bytes,
        errors=manifest.errors,
        warnings=manifest.warnings,
    )
    return body, status.to_wire()


def sync_catalog(clients: Clients, location: ResolvedLocation) -> int:
    """Create the Backups of the location's namespace found only in storage; returns how many."""
    namespace = location.namespace
    manifests = list_manifests(make_client(location.s3), location.s3.layout, namespace)
    present = {
        b["metadata"]["name"]
        for page in clients.rest.list_pages(BACKUP.path(namespace))
        for b in page
    }
    created = 0
    for manifest in manifests:
        if manifest.name in present or manifest.phase in ("New", "Running"):
            continue
        body, status = backup_from_manifest(manifest, location.name)
        try:
            clients.rest.create(BACKUP.path(namespace), body)
            patch_status(clients.custom, BACKUP, namespace, manifest.name, status)
        except ApiError as err:
            if err.status != 409:  # created meanwhile by someone else: fine
                log.warning("could not re-create Backup %s/%s: %s", namespace, manifest.name, err)
            continue
        created += 1
    return created
