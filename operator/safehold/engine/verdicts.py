"""The one place that records a verdict on a Backup (Verified, VerificationFailed, Corrupt):
in its status and in its catalog entry, so that status and catalog never disagree and a
cluster that re-discovers the bucket sees it."""

from __future__ import annotations

import logging

from safehold.api.kinds import BACKUP
from safehold.api.verification import BackupVerificationState
from safehold.engine.settings import operator_namespace
from safehold.kube.clients import Clients
from safehold.kube.resources import patch_status
from safehold.storage.catalog import read_manifest, write_manifest
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)


def record_verdict(
    clients: Clients,
    location: ResolvedLocation,
    namespace: str,
    backup: str,
    state: BackupVerificationState,
    *,
    clears_corrupt: bool = False,
) -> bool:
    """A Corrupt verdict stays until the check that found it proves the backup sound again.

    Write `state` to the Backup's catalog entry (when the location may be written) and its
    status. A Corrupt verdict is only replaced when `clears_corrupt` (the check that found it
    passed again). Returns whether the verdict was recorded."""
    body = clients.rest.get_or_none(BACKUP.path(namespace, backup))
    current = ((body or {}).get("status") or {}).get("verification") or {}
    if current.get("result") == "Corrupt" and state.result != "Corrupt" and not clears_corrupt:
        return False
    if location.writable:
        client = make_client(location.s3)
        layout = location.s3.layout
        privileged = namespace == operator_namespace()
        manifest = read_manifest(client, layout, namespace, backup, privileged=privileged)
        if manifest is not None:
            write_manifest(client, layout, manifest.model_copy(update={"verification": state}))
    if body is not None:
        patch_status(clients.custom, BACKUP, namespace, backup, {"verification": state.to_wire()})
    log.info("Backup %s/%s: %s (%s)", namespace, backup, state.result, state.message)
    return True
