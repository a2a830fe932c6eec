"""Probe a resolved location: bucket, credentials, writability, repository password."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from safehold.storage import restic
from safehold.storage.s3 import make_client, probe_bucket

if TYPE_CHECKING:
    from safehold.kube.locations import ResolvedLocation


@dataclass(frozen=True)
class LocationProbe:
    ok: bool
    reason: str
    message: str
    repository_initialized: bool | None = None


def probe_location(location: ResolvedLocation) -> LocationProbe:
    """Probe the bucket, then open (or lazily create) the namespace's repository.

    A ReadOnly location never writes: a missing repository there is reported, not created.
    """
    bucket = probe_bucket(make_client(location.s3), location.s3, location.writable)
    if not bucket.ok:
        return LocationProbe(False, bucket.reason, bucket.message)
    repo = location.repository(location.namespace)
    try:
        if location.writable:
            created = restic.ensure_initialized(repo)
            note = "repository created" if created else "repository opened"
            return LocationProbe(True, "Available", f"{bucket.message}; {note}", True)
        if restic.is_initialized(repo):
            return LocationProbe(True, "Available", f"{bucket.message}; repository opened", True)
        return LocationProbe(
            True, "Available", f"{bucket.message}; no repository yet (read-only)", False
        )
    except restic.ResticError as err:
        if err.reason == "RepositoryPasswordWrong":
            return LocationProbe(
                False,
                "RepositoryPasswordWrong",
                "the repository exists but the password in the repository password Secret "
                "does not open it",
                True,
            )
        return LocationProbe(False, err.reason, f"repository: {err}")
