"""The one mover launcher: every mover Job of a run (volume backups and restores, database
dumps and restores) is started here, with the repository's credentials in its own Secret, and
its result document is read back as a typed result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

from safehold.api.base import JSON
from safehold.api.errors import Failure
from safehold.api.labels import LABEL_BACKUP
from safehold.contract import env as names
from safehold.kube.clients import Clients
from safehold.kube.jobs import run_mover
from safehold.planning.builders import CA_DIR, MoverPod, MoverSpec
from safehold.planning.names import object_name
from safehold.planning.resource_types import resource_path
from safehold.storage import restic
from safehold.storage.location import ResolvedLocation

CA_KEY = "ca.crt"  # key of the mover Secret holding the object store's CA bundle


class MoverFailed(Failure):
    """A mover Job ended without success; the reason is the mover's (or the Job's)."""


class FromDoc(Protocol):
    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> Self: ...


R = TypeVar("R", bound=FromDoc)


@dataclass(frozen=True)
class MoverRun:
    """One mover Job: its verb, where it runs and what it is given besides the repository."""

    verb: str
    namespace: str
    subject: str
    """What it moves (a PVC or a database target): part of the Job's name."""
    suffix: str
    """Tells the Jobs of one subject apart (bk, mv, rs, db, dbr)."""
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
    """What every mover Job of one run shares: the location, whose repository the movers
    use, and the run they belong to."""

    clients: Clients
    location: ResolvedLocation
    repository_namespace: str
    run: str
    """<namespace>/<name> of the Backup or RestoreRequest (tags, SAFEHOLD_BACKUP)."""
    run_label: str

    def job_name(self, run: MoverRun) -> str:
        return object_name("safehold", self.run_label, run.subject, run.suffix)

    def _repository_secret(self) -> tuple[dict[str, str], str]:
        """(Secret data, restic options) that open the run's repository."""
        repo = self.location.repository(self.repository_namespace)
        ca = f"{CA_DIR}/{CA_KEY}" if self.location.s3.ca_bundle else None
        data, options = restic.mover_environment(repo, ca)
        if self.location.s3.ca_bundle:
            data[CA_KEY] = self.location.s3.ca_bundle
        return data, options

    def spec(self, run: MoverRun) -> tuple[MoverSpec, dict[str, str]]:
        """The Job's spec and its Secret's data."""
        data, options = self._repository_secret()
        data |= run.secret_env
        data |= run.files
        name = self.job_name(run)
        env = {**run.env, names.BACKUP: self.run, names.RESTIC_OPTIONS: options}
        spec = MoverSpec(
            name=name,
            namespace=run.namespace,
            verb=run.verb,
            env=env,
            secret_name=name,
            secret_keys=[k for k in data if k != CA_KEY and k not in run.files],
            pod=run.pod,
            labels={LABEL_BACKUP: self.run_label},
            has_ca=CA_KEY in data,
            file_keys=sorted(run.files),
        )
        return spec, data

    def launch(
        self,
        run: MoverRun,
        result: type[R],
        on_progress: Callable[[JSON], None] | None = None,
    ) -> R:
        """Run the Job to its end; its result, or MoverFailed with the mover's reason."""
        spec, data = self.spec(run)
        outcome = run_mover(self.clients.rest, spec, data, on_progress=on_progress)
        if run.delete_job:
            self.clients.rest.delete_quietly(
                resource_path("batch", "v1", "jobs", run.namespace, spec.name),
                propagation="Foreground",
            )
        if not outcome.ok:
            raise MoverFailed(outcome.reason, outcome.message)
        return result.from_doc(outcome.result)
