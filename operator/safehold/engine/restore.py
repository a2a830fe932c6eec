"""One RestoreRequest run: resolve the backup, fetch its index, plan the restore
(planning/restore.py) and execute the plan's stages in order.

A restore never deletes anything. Existing objects are left alone (`skip`) or server-side
applied over (`update`); `dryRun` only reports what would happen.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api.backup import BackupSpec, BackupStatus
from safehold.api.base import JSON
from safehold.api.content import DatabaseTarget
from safehold.api.errors import Failure
from safehold.api.kinds import BACKUP, POLICY, RESTORE
from safehold.api.labels import FIELD_MANAGER, LABEL_RESTORED_BY
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
from safehold.engine.restore_data import DataRestorer
from safehold.engine.runs import OneShotRun
from safehold.engine.settings import operator_namespace, restic_cache_dir, scratch_dir
from safehold.kube.clients import Clients
from safehold.kube.rest import ApiError, Rest
from safehold.planning import trust
from safehold.planning.builders import namespace_body
from safehold.planning.conditions import get_condition
from safehold.planning.names import label_value
from safehold.planning.policy import BackupView, policy_of
from safehold.planning.resource_types import resource_path
from safehold.planning.restore import (
    CRD_RESOURCE,
    Entry,
    Filters,
    PlannedObject,
    Stage,
    clean,
    diff_paths,
    owner_references,
    plan_restore,
    skip_reason,
)
from safehold.planning.runs import running
from safehold.planning.selection import Scope
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, read_manifest, write_json
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
MAX_STATUS_ERRORS = 20
DEFAULT_RESTORE_ACCOUNT = "safehold-restore"


@dataclass
class Source:
    backup: str
    location: ResolvedLocation
    manifest: BackupManifest


@dataclass
class Results:
    items: list[JSON] = field(default_factory=list)
    counts: RestoreCounts = field(default_factory=RestoreCounts)
    errors: list[str] = field(default_factory=list)

    def add(self, planned: PlannedObject, stage: str, action: str, **extra: Any) -> None:
        entry, target_ns = planned.entry, planned.target_namespace
        self.items.append(
            {
                "stage": stage,
                "resource": entry.resource,
                "namespace": entry.namespace,
                "name": entry.name,
                "targetNamespace": target_ns,
                "action": action,
                **extra,
            }
        )
        key = {"create": "created", "update": "updated"}.get(action, action)
        setattr(self.counts, key, getattr(self.counts, key) + 1)
        if action == "failed":
            self.errors.append(f"{entry.label(target_ns)}: {extra.get('message', '')}")


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


def resolve_source(clients: Clients, namespace: str, spec: RestoreRequestSpec) -> Source:
    if spec.backup_ref is not None:
        name = spec.backup_ref.name
    elif spec.policy_ref is not None:
        name = _latest_of_policy(clients.rest, namespace, spec.policy_ref.name)
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
    location = load_location(clients, namespace, status.storage_location, need_write=False)
    manifest = read_manifest(
        make_client(location.s3),
        location.s3.layout,
        namespace,
        name,
        privileged=namespace == operator_namespace(),
    )
    if manifest is None or not manifest.restorable:
        raise RunError(
            "BackupNotRestorable",
            f"the catalog in {location.name} has no restorable manifest for Backup {name}",
        )
    return Source(name, location, manifest)


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

    def _fetch(self, source: Source, workdir: Path) -> list[Entry]:
        """The backup's export index, restored into `workdir` and checked entry by entry (a
        snapshot is as untrusted as the bucket it came from)."""
        export, resources = source.manifest.export, source.manifest.resources
        if export is None or resources is None or not resources.snapshot_id:
            raise RunError("BackupNotRestorable", f"Backup {source.backup} holds no objects")
        repo = source.location.repository(self.namespace, restic_cache_dir())
        restic.restore_directory(repo, resources.snapshot_id, export.root, str(workdir))
        doc = json.loads(read_confined(workdir, export.index_path, trust.MAX_INDEX_BYTES))
        items = doc.get("objects") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise trust.Untrusted("IndexInvalid", "the export index lists no objects")
        for item in items:
            trust.check_index_item(item, source.manifest.namespaces)
        return [Entry.from_index(item) for item in items]

    def _restore(self, source: Source, workdir: Path) -> None:
        started = time.monotonic()
        plan = plan_restore(
            self._fetch(source, workdir),
            self.spec,
            source.manifest.volumes,
            source.manifest.databases,
            self.scope,
        )
        self.status.stages = [RestoreStageStatus(name=s.name, items=s.size) for s in plan.stages]
        results = Results()
        applier = Applier(self._acting_client(), self.spec, self.name, results, workdir)
        data = DataRestorer(
            self.clients,
            self.gateway,
            self.spec,
            self.namespace,
            self.name,
            source.location,
            database_targets(self.clients, self.namespace, source),
        )
        for index, stage in enumerate(plan.stages):
            before = results.counts.model_copy()
            self._stage_phase(index, "Running")
            try:
                self._execute(stage, applier, data)
            except Failure:
                self._stage_phase(index, "Failed", _minus(results.counts, before))
                raise
            self._stage_phase(index, "Completed", _minus(results.counts, before))
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

    def _execute(self, stage: Stage, applier: Applier, data: DataRestorer) -> None:
        if stage.create_namespaces:
            applier.ensure_namespaces(stage.create_namespaces)
        for planned in stage.objects:
            applier.restore(stage.name, planned)
        if stage.volumes:
            self.status.volumes = data.volumes(stage.volumes)
        if stage.name == "resources":
            applier.repoint_owners()
        if stage.databases or stage.unavailable_databases:
            restored = data.databases(stage.databases, self._progress) if stage.databases else []
            self.status.databases = restored + list(stage.unavailable_databases)

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
            self.status.warnings.append("location is ReadOnly: per-object results not stored")
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


def read_confined(root: Path, relative: str, limit: int) -> bytes:
    """A regular file below `root`, never through a symbolic link and never outside it."""
    trust.check_relative(relative, "path")
    path = root / relative
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(path.parent)]) != base:
        raise trust.Untrusted("PathOutsideExport", f"{relative!r} leads outside the export")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise trust.Untrusted("PathOutsideExport", f"{relative!r}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise trust.Untrusted("PathOutsideExport", f"{relative!r} is not a regular file")
        if info.st_size > limit:
            raise trust.Untrusted("ObjectTooLarge", f"{relative!r} is larger than {limit} bytes")
        return handle.read(limit + 1)


def _minus(after: RestoreCounts, before: RestoreCounts) -> RestoreCounts:
    return RestoreCounts(
        created=after.created - before.created,
        updated=after.updated - before.updated,
        skipped=after.skipped - before.skipped,
        failed=after.failed - before.failed,
    )


class Applier:
    """Applies cleaned objects one by one and records what happened to each."""

    def __init__(
        self, rest: Rest, spec: RestoreRequestSpec, restore: str, results: Results, workdir: Path
    ) -> None:
        self.rest = rest
        self.spec = spec
        self.results = results
        self.workdir = workdir
        self.labels = {LABEL_RESTORED_BY: label_value(restore)}
        self.filters = Filters(None, ["*"], [], spec.label_selector)
        self.restored: dict[tuple[str, str | None, str], str] = {}  # (kind, ns, name) -> uid
        self.pending_owners: list[tuple[str, str | None, list[JSON]]] = []

    def ensure_namespaces(self, names: tuple[str, ...]) -> None:
        """Create target namespaces the backup holds no Namespace object for."""
        if self.spec.dry_run:
            return
        for ns in names:
            path = resource_path("", "v1", "namespaces", name=ns)
            if self.rest.get_or_none(path) is None:
                self.rest.apply(path, namespace_body(ns, self.labels), field_manager=FIELD_MANAGER)

    def restore(self, stage: str, planned: PlannedObject) -> None:
        entry = planned.entry
        if planned.skip is not None:
            reason, message = planned.skip
            self.results.add(planned, stage, "skipped", reason=reason, message=message)
            return
        try:
            obj = json.loads(read_confined(self.workdir, entry.path, trust.MAX_OBJECT_BYTES))
            trust.check_object(obj, entry.api_version, entry.kind, entry.namespace, entry.name)
        except (trust.Untrusted, ValueError) as err:
            reason = getattr(err, "reason", "ObjectInvalid")
            message = getattr(err, "message", str(err))
            self.results.add(planned, stage, "failed", reason=reason, message=message)
            return
        if not self.filters.wants_object(obj):
            return  # not selected by spec.labelSelector
        why = skip_reason(entry, obj)
        if why is not None:
            self.results.add(planned, stage, "skipped", reason="NotRestorable", message=why)
            return
        self._apply(stage, planned, obj)

    def _apply(self, stage: str, planned: PlannedObject, obj: JSON) -> None:
        entry, target_ns = planned.entry, planned.target_namespace
        desired = clean(entry, obj, self.spec.namespace_mapping, self.labels)
        name = desired["metadata"]["name"]
        path = resource_path(entry.group, entry.version, entry.plural, target_ns, name)
        try:
            existing = self.rest.get_or_none(path)
            if existing is not None and self.spec.existing_resource_policy == "skip":
                self.results.add(
                    planned,
                    stage,
                    "skipped",
                    reason="AlreadyExists",
                    message="exists; existingResourcePolicy is skip",
                )
                return
            action = "create" if existing is None else "update"
            diff = diff_paths(desired, existing) if existing is not None else []
            applied = self.rest.apply(
                path, desired, field_manager=FIELD_MANAGER, force=True, dry_run=self.spec.dry_run
            )
        except ApiError as err:
            self.results.add(
                planned, stage, "failed", reason=err.reason or "Rejected", message=err.message
            )
            return
        if self.spec.dry_run:
            self.results.add(planned, stage, action, dryRun=True, changes=diff)
            return
        self.results.add(planned, stage, action, changes=diff)
        self.restored[(entry.kind, target_ns, name)] = applied["metadata"]["uid"]
        refs = owner_references(obj)
        if refs:
            self.pending_owners.append((path, target_ns, refs))
        if entry.resource == CRD_RESOURCE:
            self._wait_established(path, name)

    def _wait_established(self, path: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = self.rest.get_or_none(path) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            time.sleep(0.2)
        raise RunError("CRDNotEstablished", f"CustomResourceDefinition {name} not Established")

    def repoint_owners(self) -> None:
        """Owner references of restored objects point at the restored owners' new UIDs;
        references to owners that were not restored are dropped."""
        for path, ns, refs in self.pending_owners:
            kept = []
            for ref in refs:
                uid = self.restored.get((ref["kind"], ns, ref["name"]))
                if uid is not None:
                    kept.append({**ref, "uid": uid})
            if kept and not self.spec.dry_run:
                try:
                    self.rest.merge_patch(path, {"metadata": {"ownerReferences": kept}})
                except ApiError as err:
                    log.warning("could not restore owner references of %s: %s", path, err)
        self.pending_owners = []
