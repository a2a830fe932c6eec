"""A storage location with its secrets: where a location's repositories and catalog live."""

from __future__ import annotations

from dataclasses import dataclass, field

from safehold.api.location import BackupStorageLocationSpec
from safehold.storage import restic
from safehold.storage.s3 import S3Settings


@dataclass(frozen=True)
class ResolvedLocation:
    """A location with its secrets read. Never log or print it."""

    namespace: str
    name: str
    spec: BackupStorageLocationSpec
    s3: S3Settings
    repository_password: str = field(repr=False)

    def repository(self, namespace: str, cache_dir: str | None = None) -> restic.Repository:
        """The restic repository of one namespace's backups in this location."""
        return restic.repository_for(self.s3, namespace, self.repository_password, cache_dir)

    @property
    def writable(self) -> bool:
        return self.spec.access_mode == "ReadWrite"
