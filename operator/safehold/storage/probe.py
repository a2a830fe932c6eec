"""Probe a resolved location: bucket, credentials, writability, repository password.

Opening a restic repository derives its key from the password (scrypt, about a second of CPU
and 60 MiB in the restic process), and creating one costs twice that. A location is probed
every syncPeriod, so the probe lets restic open a repository only when it has not yet seen
this password open this exact repository: the `config` and key files are listed over S3
first (two cheap requests), and a state already verified is trusted until the password, the
config or any key file changes. A new repository is created only when its `config` object is
absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safehold.storage import restic
from safehold.storage.s3 import (
    ProbeResult,
    RepositoryObjects,
    make_client,
    probe_bucket,
    repository_objects,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from safehold.storage.location import ResolvedLocation


@dataclass(frozen=True)
class LocationProbe:
    ok: bool
    reason: str
    message: str
    repository_initialized: bool | None = None
    with_newline: bool = False
    """The repository opened only with the password followed by a newline (created so
    before Safehold stripped it): every run must use that (ResolvedLocation.with_newline)."""

    def with_where(self, where: str) -> LocationProbe:
        """The probe with `{where}` in its message filled in."""
        return dataclasses.replace(self, message=self.message.replace("{where}", where))


class _Verified:
    """Fingerprints of (repository, password, config and key ETags) that restic opened.

    Only digests are kept, in memory: a restart verifies each repository once more.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    @staticmethod
    def fingerprint(url: str, password: str, objects: RepositoryObjects) -> str:
        digest = hashlib.sha256()
        for part in (url, password, *(f"{k}={v}" for k, v in objects.etags)):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def __contains__(self, fingerprint: str) -> bool:
        with self._lock:
            if fingerprint in self._seen:
                self._seen.move_to_end(fingerprint)
                return True
            return False

    def add(self, fingerprint: str) -> None:
        with self._lock:
            self._seen[fingerprint] = None
            self._seen.move_to_end(fingerprint)
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)


VERIFIED = _Verified()


class _StoreProblem(Exception):
    def __init__(self, result: ProbeResult) -> None:
        super().__init__(result.message)
        self.result = result


def _objects(client: S3Client, location: ResolvedLocation) -> RepositoryObjects:
    found = repository_objects(client, location.s3, location.namespace)
    if isinstance(found, ProbeResult):
        raise _StoreProblem(found)
    return found


def probe_location(location: ResolvedLocation) -> LocationProbe:
    """Probe the bucket, then open (or lazily create) the namespace's repository.

    A ReadOnly location never writes: a missing repository there is reported, not created.
    """
    client = make_client(location.s3)
    bucket = probe_bucket(client, location.s3, location.writable)
    if not bucket.ok:
        return LocationProbe(False, bucket.reason, bucket.message)
    try:
        return _probe_repository(client, location, bucket.message)
    except _StoreProblem as err:
        return LocationProbe(False, err.result.reason, f"repository: {err.result.message}")
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


def _candidates(location: ResolvedLocation) -> list[ResolvedLocation]:
    """The passwords to try, in order: the Secret's value without a trailing newline, then
    with one (a repository created before Safehold stripped it, whose Secret may have been
    re-created since from the password typed by hand)."""
    if location.with_newline:
        return [location]
    return [location, location.newline_variant()]


def _opened(location: ResolvedLocation, where: str, note: str) -> LocationProbe:
    return LocationProbe(
        True, "Available", f"{where}; {note}", True, with_newline=location.with_newline
    )


def _probe_repository(client: S3Client, location: ResolvedLocation, where: str) -> LocationProbe:
    url = location.repository(location.namespace).url
    candidates = _candidates(location)
    objects = _objects(client, location)
    if objects.present:
        for candidate in candidates:
            if VERIFIED.fingerprint(url, candidate.repository_password, objects) in VERIFIED:
                return _opened(candidate, where, "repository opened")
    if not objects.present and not location.writable:
        return LocationProbe(True, "Available", f"{where}; no repository yet (read-only)", False)
    created = not objects.present and restic.ensure_initialized(
        location.repository(location.namespace),
        exists=lambda: _objects(client, location).present,
    )
    if created:
        after: RepositoryObjects | LocationProbe = _objects(client, location)
        opened_with = location
    else:
        after, opened_with = _open_with_any(client, candidates, objects, where)
    if isinstance(after, LocationProbe):
        return after
    if after.present:
        VERIFIED.add(VERIFIED.fingerprint(url, opened_with.repository_password, after))
    return _opened(opened_with, where, "repository created" if created else "repository opened")


def _open_with_any(
    client: S3Client, candidates: list[ResolvedLocation], objects: RepositoryObjects, where: str
) -> tuple[RepositoryObjects | LocationProbe, ResolvedLocation]:
    """Open with the first candidate password that opens the repository; raises
    RepositoryPasswordWrong when none does."""
    *others, last = candidates
    for candidate in others:
        try:
            return _open(client, candidate, objects, where), candidate
        except restic.ResticError as err:
            if err.reason != "RepositoryPasswordWrong":
                raise
    return _open(client, last, objects, where), last


def _open(
    client: S3Client, location: ResolvedLocation, objects: RepositoryObjects, where: str
) -> RepositoryObjects | LocationProbe:
    """Open an existing repository with restic, which derives the key and fails on a wrong
    password; the repository's objects afterwards (absent when they changed meanwhile, so the
    next probe verifies again)."""
    before = objects if objects.present else _objects(client, location)
    if not restic.is_initialized(location.repository(location.namespace)):
        if location.writable:  # removed since it was listed: created on the next probe
            return LocationProbe(
                False, "RepositoryNotFound", "the repository disappeared while probing"
            )
        return LocationProbe(True, "Available", f"{where}; no repository yet (read-only)", False)
    after = _objects(client, location)
    return after if after == before else RepositoryObjects(present=False)
