"""Re-create Backup objects from the catalog, so a new cluster finds every backup in a bucket.

Backups that exist in storage but not in the cluster are created with the annotation
safehold.io/synced-from-storage (the Backup handler leaves those alone) and the status recorded
in their manifest. Nothing is ever deleted here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from safehold.api.backup import BackupStatus
from safehold.api.base import JSON
from safehold.api.kinds import BACKUP
from safehold.api.labels import ANNOTATION_SYNCED, LABEL_POLICY
from safehold.api.verification import BackupVerificationState
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.resources import patch_status
from safehold.kube.rest import ApiError
from safehold.planning.builders import backup_object, content_spec
from safehold.planning.conditions import changed, set_condition
from safehold.planning.runs import Outcome, finished
from safehold.planning.trust import is_name
from safehold.storage.catalog import BackupManifest, ManifestProblem, scan_manifests
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
    if manifest.restorable:
        in_catalog = f"in the catalog of location {location}"
        conditions = set_condition(
            conditions, "Restorable", "True", "InCatalog", in_catalog, 1, now
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
        run_uid=manifest.uid,
        verification=manifest.verification,
    )
    return body, status.to_wire()


@dataclass
class SyncResult:
    created: int = 0
    problems: list[ManifestProblem] = field(default_factory=list)
    """Catalog entries that are not valid manifests (reported; the others synced)."""


def _problem_backup(problem: ManifestProblem, namespace: str, location: str) -> tuple[JSON, JSON]:
    """A Failed Backup that says why its catalog entry cannot be used."""
    body = backup_object(
        problem.name,
        namespace,
        {"storageLocation": location},
        annotations={ANNOTATION_SYNCED: location},
    )
    conditions = finished(
        [],
        "Failed",
        problem.reason,
        f"catalog entry {problem.key}: {problem.message}",
        1,
        datetime.now(UTC),
    )
    status = BackupStatus(conditions=conditions, phase="Failed", storage_location=location)
    return body, status.to_wire()


RESTORABLE = ("Succeeded", "PartiallyFailed")


def _of_location(body: JSON, location: str) -> bool:
    return bool((body.get("status") or {}).get("storageLocation") == location)


def catalog_state(
    body: JSON,
    location: str,
    manifests: dict[str, BackupManifest],
    problems: dict[str, ManifestProblem],
) -> tuple[Literal["True", "False"], str, str] | None:
    """What the catalog says of a finished Backup of this location: its Restorable condition
    (status, reason, message), or None when the Backup is not one to judge."""
    status = body.get("status") or {}
    if status.get("storageLocation") != location or status.get("phase") not in RESTORABLE:
        return None
    name = body["metadata"]["name"]
    if name in problems:
        problem = problems[name]
        return "False", problem.reason, f"catalog entry {problem.key}: {problem.message}"
    manifest = manifests.get(name)
    if manifest is None:
        return (
            "False",
            "ManifestMissing",
            f"the catalog of location {location} no longer has this backup's manifest: it "
            "cannot be restored",
        )
    run = status.get("runUid")
    if run and manifest.uid and manifest.uid != run:
        return "False", "ManifestOfAnotherRun", f"the catalog entry is run {manifest.uid}'s"
    return "True", "InCatalog", f"in the catalog of location {location}"


def newer_verdict(body: JSON, manifest: BackupManifest | None) -> BackupVerificationState | None:
    """The catalog entry's verdict when it is newer than the live Backup's (pure): another
    cluster's drill or check (a ReadOnly disaster-recovery cluster reads what the writing one
    found), or a verdict whose status write was lost after its catalog write. Newer wins
    either way, since every verdict went through engine/verdicts' rules where it was made.
    None when there is nothing to adopt or the entry is another run's."""
    if manifest is None or manifest.verification is None:
        return None
    status = BackupStatus.model_validate(body.get("status") or {})
    if status.run_uid and manifest.uid and status.run_uid != manifest.uid:
        return None
    current = status.verification
    if current is not None and current.time >= manifest.verification.time:
        return None
    return manifest.verification


def _adopt_verdicts(clients: Clients, bodies: list[JSON], manifests: list[BackupManifest]) -> None:
    """Give each live Backup the newer verdict its catalog entry holds."""
    by_name = {m.name: m for m in manifests}
    for body in bodies:
        verdict = newer_verdict(body, by_name.get(body["metadata"]["name"]))
        if verdict is None:
            continue
        meta = body["metadata"]
        wire = {"verification": verdict.to_wire()}
        patch_status(clients.custom, BACKUP, meta["namespace"], meta["name"], wire)
        log.info(
            "Backup %s/%s: verdict %s from the catalog",
            meta["namespace"],
            meta["name"],
            verdict.result,
        )


def _judge(
    clients: Clients,
    bodies: list[JSON],
    location: str,
    manifests: list[BackupManifest],
    problems: list[ManifestProblem],
) -> None:
    """Say on each finished Backup whether the catalog still holds it."""
    by_name = {m.name: m for m in manifests}
    broken = {p.name: p for p in problems}
    now = datetime.now(UTC)
    for body in bodies:
        state = catalog_state(body, location, by_name, broken)
        if state is None:
            continue
        meta = body["metadata"]
        status = BackupStatus.model_validate(body.get("status") or {})
        after = set_condition(status.conditions, "Restorable", *state, meta.get("generation"), now)
        if not changed(status.conditions, after, "Restorable"):
            continue
        patch_status(
            clients.custom,
            BACKUP,
            meta["namespace"],
            meta["name"],
            {"conditions": [c.to_wire() for c in after]},
        )
        if state[0] == "False":
            post_event(
                clients.core,
                BACKUP.kind,
                meta["namespace"],
                meta["name"],
                meta.get("uid"),
                "Warning",
                state[1],
                state[2],
            )


def sync_catalog(clients: Clients, location: ResolvedLocation, *, privileged: bool) -> SyncResult:
    """Create the Backups of the location's namespace found only in storage. An entry that is
    not a valid manifest becomes a Failed Backup naming why (when its folder is a valid name
    and no Backup has it), and is listed in the result. Finished Backups whose entry is gone
    or broken say so in their Restorable condition."""
    namespace = location.namespace
    manifests, problems = scan_manifests(
        make_client(location.s3), location.s3.layout, namespace, privileged=privileged
    )
    bodies = [b for page in clients.rest.list_pages(BACKUP.path(namespace)) for b in page]
    present = {b["metadata"]["name"] for b in bodies}
    _judge(clients, bodies, location.name, manifests, problems)
    _adopt_verdicts(clients, [b for b in bodies if _of_location(b, location.name)], manifests)
    result = SyncResult(problems=problems)
    wanted = [
        (m.name, *backup_from_manifest(m, location.name))
        for m in manifests
        if m.name not in present and m.phase not in ("New", "Running")
    ]
    wanted += [
        (p.name, *_problem_backup(p, namespace, location.name))
        for p in problems
        if p.name not in present and is_name(p.name)
    ]
    for name, body, status in wanted:
        try:
            clients.rest.create(BACKUP.path(namespace), body)
            patch_status(clients.custom, BACKUP, namespace, name, status)
        except ApiError as err:
            if err.status != 409:  # created meanwhile by someone else: fine
                log.warning("could not re-create Backup %s/%s: %s", namespace, name, err)
            continue
        result.created += 1
    return result
