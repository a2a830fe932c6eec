"""One RestoreRequest run: resolve the backup, fetch its index, plan the restore
(planning/restore.py) and execute the plan's stages in order.

A restore never deletes anything. Existing objects are left alone (`skip`) or server-side
applied over (`update`); `dryRun` only reports what would happen.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api.backup import BackupSpec, BackupStatus, DatabaseResult, VolumeResult
from safehold.api.base import JSON
from safehold.api.content import DatabaseTarget
from safehold.api.errors import Failure
from safehold.api.kinds import BACKUP, POLICY, RESTORE
from safehold.api.labels import FIELD_MANAGER
from safehold.api.policy import BackupPolicySpec
from safehold.api.restore import (
    RestoreCounts,
    RestoreRequestSpec,
    RestoreRequestStatus,
    RestoreStageStatus,
)
from safehold.engine.databases import target_warnings
from safehold.engine.errors import RunError
from safehold.engine.gateway import Gateway
from safehold.engine.locations import load_location, store_failed
from safehold.engine.restore_apply import Applier, Results, read_confined
from safehold.engine.restore_data import DataRestorer
from safehold.engine.runs import OneShotRun
from safehold.engine.settings import operator_namespace, restic_cache_dir, scratch_dir
from safehold.kube.clients import Clients
from safehold.kube.rest import ApiError, Rest
from safehold.planning import trust
from safehold.planning.conditions import get_condition
from safehold.planning.meta import policy_of
from safehold.planning.policy import BackupView
from safehold.planning.resource_types import resource_path
from safehold.planning.restore import Entry, RestorePlan, Stage, plan_restore
from safehold.planning.results import results_config_map
from safehold.planning.runs import running
from safehold.planning.selection import Scope
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, read_manifest, write_json
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
MAX_STATUS_ERRORS = 20
DEFAULT_RESTORE_ACCOUNT = "safehold-restore"
WARNING_DETAIL = 600


@dataclass
class Source:
    backup: str
    location: ResolvedLocation
    manifest: BackupManifest
    warnings: list[str] = field(default_factory=list)
    """What the restore must say about its source (a Corrupt verdict)."""


def corrupt_warning(name: str, status: BackupStatus) -> str | None:
    """The warning of a restore from a Backup named explicitly although it is Corrupt: it
    proceeds, since what is left of it may be what the user needs."""
    verdict = status.verification
    if verdict is None or verdict.result != "Corrupt":
        return None
    by = f"drill {verdict.verification}" if verdict.verification else "the repository check"
    found = verdict.message or "no details"
    found = found if len(found) <= WARNING_DETAIL else found[: WARNING_DETAIL - 3] + "..."
    return (
        f"Backup {name} is Corrupt (verdict of {by} at {verdict.time.isoformat()}: {found}); "
        "restoring what is left of it: items whose data was lost fail"
    )


def _latest_of_policy(rest: Rest, namespace: str, policy: str) -> str:
    candidates = []
    for page in rest.list_pages(BACKUP.path(namespace)):
        for body in page:
            if policy_of(body) != policy:
                continue
            status = BackupStatus.model_validate(body.get("status") or {})
            if BackupView.of(body).restorable and status.completion_time:
                candidates.append((status.completion_time, body["metadata"]["name"]))
    if not candidates:
        raise RunError(
            "BackupNotFound", f"BackupPolicy {policy} has no successful Backup in {namespace}"
        )
    return str(max(candidates)[1])


class ManifestMissing(RunError):
    """The catalog lost the Backup's manifest (or holds an unrestorable one)."""


def resolve_backup(
    clients: Clients, namespace: str, backup: str | None, policy: str | None
) -> tuple[str, BackupStatus]:
    """The Backup to restore (named, or the policy's newest restorable one) and its status;
    RunError when it cannot be restored."""
    if backup is not None:
        name = backup
    elif policy is not None:
        name = _latest_of_policy(clients.rest, namespace, policy)
    else:
        raise RunError("InvalidSpec", "set backupRef or policyRef")
    body = clients.rest.get_or_none(BACKUP.path(namespace, name))
    if body is None:
        raise RunError("BackupNotFound", f"Backup {namespace}/{name} does not exist")
    status = BackupStatus.model_validate(body.get("status") or {})
    if status.phase not in ("Succeeded", "PartiallyFailed") or not status.storage_location:
        raise RunError(
            "BackupNotRestorable",
            f"Backup {namespace}/{name} is {status.phase or 'New'}; only Succeeded or "
            "PartiallyFailed backups can be restored",
        )
    gone = get_condition(status.conditions, "Restorable")
    if gone is not None and gone.status == "False":
        raise RunError("BackupNotRestorable", f"Backup {namespace}/{name}: {gone.message}")
    return name, status


def read_source(clients: Clients, namespace: str, name: str, status: BackupStatus) -> Source:
    """The Backup's location and its manifest from the catalog (ManifestMissing when the
    catalog has no restorable entry for it: its reason stays BackupNotRestorable)."""
    location = load_location(clients, namespace, status.storage_location or "", need_write=False)
    manifest = read_manifest(
        make_client(location.s3),
        location.s3.layout,
        namespace,
        name,
        privileged=namespace == operator_namespace(),
    )
    if manifest is None or not manifest.restorable:
        raise ManifestMissing(
            "BackupNotRestorable",
            f"the catalog in {location.name} has no restorable manifest for Backup {name}",
        )
    warning = corrupt_warning(name, status)
    return Source(name, location, manifest, [warning] if warning else [])


def resolve_source(clients: Clients, namespace: str, spec: RestoreRequestSpec) -> Source:
    name, status = resolve_backup(
        clients,
        namespace,
        spec.backup_ref.name if spec.backup_ref else None,
        spec.policy_ref.name if spec.policy_ref else None,
    )
    return read_source(clients, namespace, name, status)


def database_targets(clients: Clients, namespace: str, source: Source) -> list[DatabaseTarget]:
    """Where the backup's database targets lived: recorded in the manifest (format 2); for
    older backups, the Backup's own spec or its policy's, read from the cluster."""
    if source.manifest.content is not None:
        return list(source.manifest.content.databases)
    body = clients.rest.get_or_none(BACKUP.path(namespace, source.backup)) or {}
    spec = BackupSpec.model_validate(body.get("spec") or {})
    if spec.storage_location is not None or spec.policy_ref is None:
        return list(spec.databases)
    policy = clients.rest.get_or_none(POLICY.path(namespace, spec.policy_ref.name)) or {}
    return list(BackupPolicySpec.model_validate(policy.get("spec") or {}).databases)


def fetch_index(source: Source, namespace: str, workdir: Path) -> list[Entry]:
    """The backup's export index, restored into `workdir` and checked entry by entry (a
    snapshot is as untrusted as the bucket it came from)."""
    export, resources = source.manifest.export, source.manifest.resources
    if export is None or resources is None or not resources.snapshot_id:
        raise RunError("BackupNotRestorable", f"Backup {source.backup} holds no objects")
    repo = source.location.repository(namespace, restic_cache_dir())
    restic.restore_directory(repo, resources.snapshot_id, export.root, str(workdir))
    doc = json.loads(read_confined(workdir, export.index_path, trust.MAX_INDEX_BYTES))
    items = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise trust.Untrusted("IndexInvalid", "the export index lists no objects")
    for item in items:
        trust.check_index_item(item, source.manifest.namespaces)
    return [Entry.from_index(item) for item in items]


StagePhaseFn = Callable[[int, str, RestoreCounts | None], None]


class StageRunner:
    """Runs a restore plan's stages in order: objects through the Applier, volume data and
    database targets through the DataRestorer; reports each stage's phase and counts."""

    def __init__(
        self, applier: Applier, data: DataRestorer, progress: Callable[[str], None]
    ) -> None:
        self.applier = applier
        self.data = data
        self.progress = progress
        self.volumes: list[VolumeResult] = []
        self.databases: list[DatabaseResult] = []

    def run(self, plan: RestorePlan, on_stage: StagePhaseFn) -> None:
        counts = self.applier.results.counts
        for index, stage in enumerate(plan.stages):
            before = counts.model_copy()
            on_stage(index, "Running", None)
            try:
                self._execute(stage)
            except Failure:
                on_stage(index, "Failed", _minus(counts, before))
                raise
            on_stage(index, "Completed", _minus(counts, before))

    def _execute(self, stage: Stage) -> None:
        if stage.create_namespaces:
            self.applier.ensure_namespaces(stage.create_namespaces)
        for planned in stage.objects:
            self.applier.restore(stage.name, planned)
        if stage.volumes:
            self.volumes = self.data.volumes(stage.volumes)
        if stage.name == "resources":
            self.applier.repoint_owners()
        if stage.databases or stage.unavailable_databases:
            restored = (
                self.data.databases(stage.databases, self.progress) if stage.databases else []
            )
            self.databases = restored + list(stage.unavailable_databases)


class RestoreRun(OneShotRun[RestoreRequestStatus]):
    info = RESTORE
    status_model = RestoreRequestStatus

    def __init__(self, clients: Clients, body: JSON, gateway: Gateway) -> None:
        super().__init__(clients, body, gateway)
        self.scope = Scope(self.namespace, operator_namespace())

    def _run(self) -> None:
        self.spec = RestoreRequestSpec.model_validate(self.body.get("spec") or {})
        now = datetime.now(UTC)
        self.status.start_time = now
        try:
            self.scope.check_restore_targets(self.spec.namespace_mapping.values())
            source = resolve_source(self.clients, self.namespace, self.spec)
        except Failure as err:
            self._finish("Failed", err.reason, err.message)
            return
        self.status.backup = source.backup
        self.status.warnings += source.warnings
        verb = "planning (dry run)" if self.spec.dry_run else "restoring"
        self.status.conditions = running(
            self.status.conditions, f"{verb} from Backup {source.backup}", self.generation, now
        )
        self._write()
        workdir = scratch_dir() / "restores" / self.namespace / self.name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            self._restore(source, workdir)
        except Failure as failure:
            named = store_failed(self.clients, source.location, failure)
            self._finish("Failed", named.reason, named.message)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _restore(self, source: Source, workdir: Path) -> None:
        started = time.monotonic()
        plan = plan_restore(
            fetch_index(source, self.namespace, workdir),
            self.spec,
            source.manifest.volumes,
            source.manifest.databases,
            self.scope,
        )
        self.status.stages = [RestoreStageStatus(name=s.name, items=s.size) for s in plan.stages]
        results = Results()
        stages = StageRunner(
            Applier(self._acting_client(), self.spec, self.name, results, workdir),
            DataRestorer(
                self.clients,
                self.gateway,
                self.spec,
                self.namespace,
                self.name,
                source.location,
                database_targets(self.clients, self.namespace, source),
            ),
            self._progress,
        )
        try:
            stages.run(plan, self._stage_phase)
        finally:
            self.status.volumes, self.status.databases = stages.volumes, stages.databases
        self._record(source, results, time.monotonic() - started)

    def _acting_client(self) -> Rest:
        """Whose rights the objects are applied with: outside the operator's namespace (or
        when the spec names one) a ServiceAccount of the RestoreRequest's namespace."""
        name = self.spec.service_account_name
        if name is None and self.scope.privileged:
            return self.clients.rest
        name = name or DEFAULT_RESTORE_ACCOUNT
        path = resource_path("", "v1", "serviceaccounts", self.namespace, name)
        if self.clients.rest.get_or_none(path) is None:
            raise RunError(
                "ServiceAccountNotFound",
                f"ServiceAccount {self.namespace}/{name} does not exist: a restore here acts "
                "with its rights; create it and bind the roles it may restore with "
                "(docs/security.md), or name another in spec.serviceAccountName",
            )
        self.status.warnings.append(
            f"objects applied as system:serviceaccount:{self.namespace}:{name}"
        )
        return self.clients.rest.as_service_account(self.namespace, name)

    def _stage_phase(self, index: int, phase: str, counts: RestoreCounts | None = None) -> None:
        stage = self.status.stages[index]
        stage.phase = phase  # type: ignore[assignment]
        if counts is not None:
            stage.counts = counts
        if phase == "Running" and stage.items:
            self.status.conditions = running(
                self.status.conditions,
                f"stage {stage.name}: {stage.items} item(s)",
                self.generation,
                datetime.now(UTC),
            )
        try:
            self._write()
        except Exception:  # progress is best effort
            log.debug("stage progress update failed", exc_info=True)

    def _progress(self, message: str) -> None:
        """A running stage says what it is doing (what a database restore waits for)."""
        current = get_condition(self.status.conditions, "Succeeded")
        text = f"stage databases: {message}"
        if current is not None and current.message == text:
            return
        self.status.conditions = running(
            self.status.conditions, text, self.generation, datetime.now(UTC)
        )
        try:
            self._write()
        except Exception:  # progress is best effort
            log.debug("progress update failed", exc_info=True)

    def _record(self, source: Source, results: Results, seconds: float) -> None:
        c = results.counts
        self.status.counts = c
        for db in self.status.databases:
            if db.result == "Failed":
                results.errors.append(f"database target {db.target}: {db.message}")
            elif db.result == "Skipped" and not self.spec.dry_run:
                self.status.warnings.append(f"database target {db.target} skipped: {db.message}")
        self.status.warnings += target_warnings(self.status.databases)
        for vol in self.status.volumes:
            if vol.result == "Failed":
                results.errors.append(f"PVC {vol.namespace}/{vol.pvc}: {vol.message}")
        self.status.errors = results.errors[:MAX_STATUS_ERRORS]
        if len(results.errors) > MAX_STATUS_ERRORS:
            self.status.warnings.append(
                f"{len(results.errors) - MAX_STATUS_ERRORS} more errors in the results file"
            )
        self._write_results(source, results)
        self._finish(*self._verdict(c, seconds))

    def _write_results(self, source: Source, results: Results) -> None:
        if not source.location.writable:
            self._write_results_config_map(results)
            return
        key = source.location.s3.layout.restore_results_key(
            self.namespace, source.backup, self.name
        )
        try:
            path = write_json(
                make_client(source.location.s3),
                source.location.s3.bucket,
                key,
                {"restore": self.name, "dryRun": self.spec.dry_run, "items": results.items},
            )
            self.status.results_path = f"s3://{source.location.s3.bucket}/{path}"
        except Exception as err:  # results are a convenience; the restore happened
            self.status.warnings.append(f"could not write the results file: {err}")

    def _write_results_config_map(self, results: Results) -> None:
        """Beside the RestoreRequest, when the bucket may not be written."""
        body, left_out = results_config_map(
            self.name, self.namespace, self.body["metadata"]["uid"], self.spec.dry_run,
            results.items,
        )  # fmt: skip
        name = body["metadata"]["name"]
        path = resource_path("", "v1", "configmaps", self.namespace, name)
        try:
            self.clients.rest.apply(path, body, field_manager=FIELD_MANAGER, force=True)
        except ApiError as err:
            self.status.warnings.append(f"could not write the results ConfigMap: {err.message}")
            return
        self.status.results_config_map = name
        if left_out:
            self.status.warnings.append(
                f"results ConfigMap {name} holds the first {len(results.items) - left_out} "
                f"of {len(results.items)} items (a ConfigMap holds at most 1 MiB)"
            )

    def _verdict(self, c: RestoreCounts, seconds: float) -> tuple[Any, str, str]:
        would = "would be " if self.spec.dry_run else ""
        summary = (
            f"{c.created} {would}created, {c.updated} {would}updated, {c.skipped} skipped, "
            f"{c.failed} failed in {seconds:.1f}s"
        )
        if self.spec.dry_run:
            summary = "dry run, nothing changed: " + summary
        items = [v.result for v in self.status.volumes] + [d.result for d in self.status.databases]
        failed_items = items.count("Failed")
        if failed_items:
            summary += f"; {failed_items} PVC(s) or database target(s) failed"
        failed = c.failed + failed_items
        done = c.created + c.updated + c.skipped + len(items) - failed_items
        if failed and done:
            return "PartiallyFailed", "PartiallyFailed", summary
        if failed:
            return "Failed", "RestoreFailed", summary
        return "Succeeded", "Completed", summary


def _minus(after: RestoreCounts, before: RestoreCounts) -> RestoreCounts:
    return RestoreCounts(
        created=after.created - before.created,
        updated=after.updated - before.updated,
        skipped=after.skipped - before.skipped,
        failed=after.failed - before.failed,
    )
