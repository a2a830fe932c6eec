"""What backup and restore runs share: errors, locations, status writing, versions."""

from __future__ import annotations

import functools
import subprocess

from safehold import GROUP, VERSION, __version__
from safehold.api.kinds import LOCATION
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.kube.clients import Clients
from safehold.kube.locations import ResolvedLocation, resolve_location
from safehold.kube.rest import resource_path
from safehold.kube.secrets import SecretProblem
from safehold.planning.conditions import get_condition
from safehold.storage.restic import restic_binary


class RunError(Exception):
    """A run cannot go on; `reason` becomes the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def custom_path(plural: str, namespace: str, name: str | None = None) -> str:
    return resource_path(GROUP, VERSION, plural, namespace, name)


def load_location(
    clients: Clients, namespace: str, name: str, *, need_write: bool
) -> ResolvedLocation:
    """A Ready location with its secrets; RunError explains why not."""
    body = clients.rest.get_or_none(custom_path(LOCATION.plural, namespace, name))
    if body is None:
        raise RunError(
            "LocationNotFound", f"BackupStorageLocation {namespace}/{name} does not exist"
        )
    spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
    status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
    ready = get_condition(status.conditions, "Ready")
    if ready is None or ready.status != "True":
        why = f"{ready.reason}: {ready.message}" if ready else "not probed yet"
        raise RunError(
            "LocationNotReady", f"BackupStorageLocation {namespace}/{name} is not Ready ({why})"
        )
    if need_write and spec.access_mode != "ReadWrite":
        raise RunError(
            "LocationReadOnly",
            f"BackupStorageLocation {namespace}/{name} is ReadOnly; backups need a ReadWrite one",
        )
    try:
        return resolve_location(clients.core, namespace, name, spec)
    except SecretProblem as err:
        raise RunError(err.reason, str(err)) from None


@functools.cache
def restic_version() -> str:
    out = subprocess.run(
        [restic_binary(), "version"], capture_output=True, text=True, check=False, timeout=30
    )
    return out.stdout.split(" compiled")[0].strip()


def versions(clients: Clients) -> dict[str, str]:
    kube = clients.rest.get("/version").get("gitVersion", "unknown")
    return {"safehold": __version__, "kubernetes": str(kube), "restic": restic_version()}
