"""The one mover launcher: every mover Job of a run (volume backups and restores, database
dumps and restores) is started here, and its result document is read back as a typed result.

What a mover holds: a grant for the one repository it works on (append for backups, read for
restores; engine/gateway.py), that repository's password, and what its item needs (a
database password, a CA). Never S3 credentials, never a password that opens another
namespace's data. The grant is revoked and the Secret deleted as soon as the Job has ended.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, Self, TypeVar

from safehold.api.base import JSON
from safehold.api.errors import Failure
from safehold.api.labels import LABEL_BACKUP, LABEL_INTERNAL
from safehold.contract import env as names
from safehold.engine.gateway import Gateway
from safehold.engine.settings import restic_cache_dir
from safehold.kube.clients import Clients
from safehold.kube.jobs import run_mover
from safehold.planning.builders import MoverPod, MoverSpec
from safehold.planning.names import label_value, object_name
from safehold.planning.resource_types import resource_path
from safehold.storage import restic
from safehold.storage.grants import Mode
from safehold.storage.location import ResolvedLocation

GRANT_MARGIN = timedelta(minutes=5)  # beyond the Job's deadline, for the last requests


class MoverFailed(Failure):
    """A mover Job ended without success; the reason is the mover's (or the Job's)."""

    def __init__(self, reason: str, message: str, document: JSON | None = None) -> None:
        super().__init__(reason, message)
        self.document = document or {}
        """The mover's result document, as far as it got (what it already stored)."""


class FromDoc(Protocol):
    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> Self: ...


R = TypeVar("R", bound=FromDoc)


@dataclass(frozen=True)
class RepositoryAccess:
    """The repository a mover uses and how."""

    key: str
    """Below the location's prefix, e.g. repositories/shop."""
    password: str = field(repr=False)
    mode: Mode


@dataclass(frozen=True)
class MoverRun:
    """One mover Job: its verb, where it runs and what it is given besides the repository."""

    verb: str
    namespace: str
    subject: str
    """What it moves (a PVC or a database target): part of the Job's name."""
    suffix: str
    """Tells the Jobs of one subject apart (bk, mv, rs, db, dbr)."""
    access: RepositoryAccess
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables taken from the Job's Secret (a database password)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Secret values mounted as files under FILES_DIR (a database server's CA)."""
    pod: MoverPod = field(default_factory=MoverPod)
    delete_job: bool = False
    """Delete the Job when it ended (its pod would keep a temporary PVC in use)."""


@dataclass(frozen=True)
class MoverLauncher:
    """What every mover Job of one run shares: the location, the gateway, and the run."""

    clients: Clients
    gateway: Gateway
    location: ResolvedLocation
    owner: str
    """Namespace of the Backup or RestoreRequest: whose repositories these are."""
    run_label: str
    """Name of the Backup or RestoreRequest."""

    @property
    def run(self) -> str:
        return f"{self.owner}/{self.run_label}"

    def job_name(self, run: MoverRun) -> str:
        return object_name("safehold", self.run_label, run.subject, run.suffix)

    def own_repository(self, mode: Mode) -> RepositoryAccess:
        """The repository of the run's namespace (database dumps and their restores)."""
        key = self.location.s3.layout.repository(self.owner)
        return RepositoryAccess(key, self.location.repository_password_for(key), mode)

    def namespace_repository(self, source: str, mode: Mode) -> RepositoryAccess:
        """The repository of namespace `source`'s volume data in the run's namespace's backups;
        created here when missing (movers may not create repositories)."""
        key = self.location.s3.layout.namespace_repository(self.owner, source)
        access = RepositoryAccess(key, self.location.repository_password_for(key), mode)
        if mode == "append":
            restic.ensure_initialized(self.location.repository_at(key, restic_cache_dir()))
        return access

    def scratch_repository(self, tag: str) -> tuple[RepositoryAccess, restic.Repository]:
        """A new repository of its own, with a random password, for one restore item."""
        key = self.location.s3.layout.scratch_repository(
            object_name(self.run_label, tag, secrets.token_hex(4))
        )
        password = secrets.token_hex(32)
        repo = restic.repository_at(self.location.s3, key, password)  # no cache: used once
        restic.init(repo)
        return RepositoryAccess(key, password, "read"), repo

    def spec(self, run: MoverRun) -> MoverSpec:
        name = self.job_name(run)
        env = {**run.env, names.BACKUP: self.run}
        if run.access.mode == "read":
            env[names.RESTIC_OPTIONS] = "--no-lock"  # a read grant writes nothing, not even locks
        secret_keys = ["RESTIC_REPOSITORY", "RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD"]
        return MoverSpec(
            name=name,
            namespace=run.namespace,
            verb=run.verb,
            env=env,
            secret_name=name,
            secret_keys=[*secret_keys, "RESTIC_PASSWORD", *run.secret_env],
            pod=run.pod,
            labels={LABEL_BACKUP: label_value(self.run_label), LABEL_INTERNAL: "true"},
            file_keys=sorted(run.files),
        )

    def launch(
        self,
        run: MoverRun,
        result: type[R],
        on_progress: Callable[[JSON], None] | None = None,
    ) -> R:
        """Run the Job to its end; its result, or MoverFailed with the mover's reason."""
        spec = self.spec(run)
        valid = timedelta(seconds=spec.pod.deadline_seconds) + GRANT_MARGIN
        credentials = self.gateway.issue(self.location, run.access.key, run.access.mode, valid)
        data = {
            "RESTIC_REPOSITORY": f"rest:{credentials.url.rstrip('/')}/",
            "RESTIC_REST_USERNAME": credentials.username,
            "RESTIC_REST_PASSWORD": credentials.password,
            "RESTIC_PASSWORD": run.access.password,
            **run.secret_env,
            **run.files,
        }
        rest = self.clients.rest
        try:
            outcome = run_mover(rest, spec, data, on_progress=on_progress)
        finally:
            self.gateway.revoke(credentials)
            rest.delete_quietly(resource_path("", "v1", "secrets", run.namespace, spec.secret_name))
        if run.delete_job:
            rest.delete_quietly(
                resource_path("batch", "v1", "jobs", run.namespace, spec.name),
                propagation="Foreground",
            )
        if not outcome.ok:
            raise MoverFailed(outcome.reason, outcome.message, outcome.result)
        return result.from_doc(outcome.result)
