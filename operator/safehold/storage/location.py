"""A storage location with its secrets: where a location's repositories and catalog live."""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass, field

from safehold.api.location import BackupStorageLocationSpec
from safehold.storage import restic
from safehold.storage.s3 import S3Settings


def strip_one_newline(value: str) -> str:
    """The password as a person types it: one trailing "\\n" or "\\r\\n" removed, which
    `kubectl create secret --from-file` (and most editors) leave at the end of the file."""
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


@dataclass(frozen=True)
class ResolvedLocation:
    """A location with its secrets read. Never log or print it."""

    namespace: str
    name: str
    spec: BackupStorageLocationSpec
    s3: S3Settings
    secret_password: str = field(repr=False)
    """The repository password Secret's value, exactly as stored."""
    with_newline: bool = False
    """End the password with a newline: the Secret's own line ending, else "\n". Only for
    repositories created before Safehold stripped the newline, which open with nothing else
    (the location probe finds out, and says so on the location)."""

    @property
    def repository_password(self) -> str:
        """The password every repository of this location is opened (or derived) with."""
        stripped = strip_one_newline(self.secret_password)
        if not self.with_newline:
            return stripped
        return self.secret_password if stripped != self.secret_password else stripped + "\n"

    def newline_variant(self) -> ResolvedLocation:
        """This location with the password ended by a newline."""
        return dataclasses.replace(self, with_newline=True)

    def repository(self, namespace: str, cache_dir: str | None = None) -> restic.Repository:
        """The restic repository of one namespace's backups in this location."""
        return restic.repository_for(self.s3, namespace, self.repository_password, cache_dir)

    def repository_password_for(self, key: str) -> str:
        """The password of the repository at `key`: the location's own for the repositories
        of its namespaces; for a namespace repository, one derived from it and the source
        namespace, so that what a mover in that namespace holds opens nothing else."""
        parts = key.split("/")
        if parts[0] == "namespace-repositories" and len(parts) == 3:
            message = f"safehold.io/namespace-repository\0{parts[1]}\0{parts[2]}".encode()
            return hmac.new(self.repository_password.encode(), message, "sha256").hexdigest()
        return self.repository_password

    def repository_at(self, key: str, cache_dir: str | None = None) -> restic.Repository:
        """The repository at `key` (below the prefix), opened with its password."""
        return restic.repository_at(self.s3, key, self.repository_password_for(key), cache_dir)

    @property
    def writable(self) -> bool:
        return self.spec.access_mode == "ReadWrite"
