"""One RestoreRequest run: resolve the backup, fetch its export, apply objects in order.

A restore never deletes anything. Existing objects are left alone (`skip`) or server-side
applied over (`update`); `dryRun` only reports what would happen.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api.backup import BackupSpec, BackupStatus, VolumeResult
from safehold.api.content import DatabaseTarget, Volumes
from safehold.api.kinds import BACKUP, POLICY, RESTORE
from safehold.api.policy import BackupPolicySpec
from safehold.api.restore import (
    DatabaseRestore,
    RestoreCounts,
    RestoreRequestSpec,
    RestoreRequestStatus,
    VolumeRestore,
)
from safehold.config import (
    FIELD_MANAGER,
    LABEL_POLICY,
    LABEL_RESTORED_BY,
    operator_namespace,
    scratch_dir,
)
from safehold.engine.common import RunError, custom_path, load_location
from safehold.engine.databases import restore_target
from safehold.engine.runs import OneShotRun
from safehold.engine.volumes import MoverContext, restore_volume, task_for_restore
from safehold.kube.clients import Clients
from safehold.kube.locations import ResolvedLocation
from safehold.kube.rest import ApiError, Rest, resource_path
from safehold.planning.restore import (
    CRD_RESOURCE,
    Entry,
    Filters,
    clean,
    diff_paths,
    map_namespace,
    owner_references,
    priority,
    skip_reason,
    sort_entries,
)
from safehold.planning.runs import running
from safehold.planning.selection import Scope, SelectionError
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, read_manifest, write_json
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
JSON = dict[str, Any]
MAX_STATUS_ERRORS = 20


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

    def add(self, entry: Entry, target_ns: str | None, action: str, **extra: Any) -> None:
        self.items.append(
            {
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
    path = custom_path(BACKUP.plural, namespace)
    for page in rest.list_pages(path, label_selector=f"{LABEL_POLICY}={policy}"):
        for body in page:
            status = BackupStatus.model_validate(body.get("status") or {})
            if status.phase in ("Succeeded", "PartiallyFailed") and status.completion_time:
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
    body = clients.rest.get_or_none(custom_path(BACKUP.plural, namespace, name))
    if body is None:
        raise RunError("BackupNotFound", f"Backup {namespace}/{name} does not exist")
    status = BackupStatus.model_validate(body.get("status") or {})
    if status.phase not in ("Succeeded", "PartiallyFailed") or not status.storage_location:
        raise RunError(
            "BackupNotRestorable",
            f"Backup {namespace}/{name} is {status.phase or 'New'}; only Succeeded or "
            "PartiallyFailed backups can be restored",
        )
    location = load_location(clients, namespace, status.storage_location, need_write=False)
    manifest = read_manifest(make_client(location.s3), location.s3.layout, namespace, name)
    if manifest is None or not manifest.restorable:
        raise RunError(
            "BackupNotRestorable",
            f"the catalog in {location.name} has no restorable manifest for Backup {name}",
        )
    return Source(name, location, manifest)


class RestoreRun(OneShotRun[RestoreRequestStatus]):
    info = RESTORE
    status_model = RestoreRequestStatus

    def __init__(self, clients: Clients, body: JSON) -> None:
        super().__init__(clients, body)
        self.spec = RestoreRequestSpec.model_validate(body.get("spec") or {})
        self.scope = Scope(self.namespace, operator_namespace())

    def _run(self) -> None:
        now = datetime.now(UTC)
        self.status.start_time = now
        try:
            self.scope.check_restore_targets(self.spec.namespace_mapping.values())
            source = resolve_source(self.clients, self.namespace, self.spec)
        except SelectionError as err:
            self._finish("Failed", err.reason, str(err))
            return
        except RunError as err:
            self._finish("Failed", err.reason, str(err))
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
        except (RunError, SelectionError, restic.ResticError) as err:
            self._finish("Failed", err.reason, str(err))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _fetch(self, source: Source, workdir: Path) -> list[Entry]:
        export, resources = source.manifest.export, source.manifest.resources
        if export is None or resources is None or not resources.snapshot_id:
            raise RunError("BackupNotRestorable", f"Backup {source.backup} holds no objects")
        repo = source.location.repository(self.namespace, str(scratch_dir() / "restic-cache"))
        restic.restore_directory(repo, resources.snapshot_id, export.root, str(workdir))
        index = json.loads((workdir / export.index_path).read_text())
        return [Entry.from_index(item) for item in index["objects"]]

    def _restore(self, source: Source, workdir: Path) -> None:
        started = time.monotonic()
        entries = self._fetch(source, workdir)
        filters = Filters(
            self.spec.included_namespaces,
            self.spec.included_resources,
            self.spec.excluded_resources,
            self.spec.label_selector,
        )
        mapping = self.spec.namespace_mapping
        chosen = [e for e in entries if filters.wants_entry(e)]
        targets = {map_namespace(e.namespace, mapping) for e in chosen if e.namespace}
        self.scope.check_restore_targets(t for t in targets if t)
        if not self.scope.privileged:
            chosen = [e for e in chosen if e.namespace is not None]
        results = Results()
        applier = Applier(self.clients.rest, self.spec, self.name, source, results)
        applier.ensure_namespaces(sorted(t for t in targets if t), chosen)
        volumes = self._wanted_volumes(source)
        from_snapshot = {(v.namespace, v.pvc) for v in volumes if v.mode == "snapshot"}
        volumes_done = False
        for entry in sort_entries(chosen):
            # Volume data lands after the PVCs exist and before workloads start using them.
            if not volumes_done and priority(entry.resource) > priority("persistentvolumeclaims"):
                self._restore_volumes(source, volumes)
                volumes_done = True
            if (
                entry.resource == "persistentvolumeclaims"
                and (entry.namespace, entry.name) in from_snapshot
            ):
                results.add(
                    entry,
                    map_namespace(entry.namespace, mapping),
                    "skipped",
                    reason="RestoredFromSnapshot",
                    message="created from its VolumeSnapshot by the volume restore",
                )
                continue
            obj = json.loads((workdir / entry.path).read_text())
            applier.restore(entry, obj)
        if not volumes_done:
            self._restore_volumes(source, volumes)
        applier.repoint_owners()
        self._restore_databases(source)
        for db in self.status.databases:
            if db.result == "Failed":
                results.errors.append(f"database target {db.target}: {db.message}")
        for vol in self.status.volumes:
            if vol.result == "Failed":
                results.errors.append(f"PVC {vol.namespace}/{vol.pvc}: {vol.message}")
        self._record(source, results, time.monotonic() - started)

    def _mover_context(self, source: Source) -> MoverContext:
        """What the restore's mover Jobs (volumes and databases) share."""
        return MoverContext(
            self.clients.rest,
            source.location,
            self.namespace,
            f"{self.namespace}/{self.name}",
            self.name,
            Volumes(parallelism=4),
            self.clients.core,
        )

    def _original_targets(self, source: Source) -> dict[str, DatabaseTarget]:
        """Where the backup's database targets lived, from its Backup (or policy) spec."""
        body = (
            self.clients.rest.get_or_none(custom_path(BACKUP.plural, self.namespace, source.backup))
            or {}
        )
        spec = BackupSpec.model_validate(body.get("spec") or {})
        targets = list(spec.databases)
        if spec.policy_ref is not None:
            policy = (
                self.clients.rest.get_or_none(
                    custom_path(POLICY.plural, self.namespace, spec.policy_ref.name)
                )
                or {}
            )
            targets = BackupPolicySpec.model_validate(policy.get("spec") or {}).databases
        return {t.name: t for t in targets}

    def _restore_databases(self, source: Source) -> None:
        wanted = self.spec.databases or DatabaseRestore()
        dumped = [d for d in source.manifest.databases if d.result == "Succeeded"]
        if not wanted.enabled or not dumped:
            return
        if self.spec.dry_run:
            self.status.databases = [
                d.model_copy(update={"result": "Skipped", "message": "dry run: would restore"})
                for d in dumped
            ]
            return
        originals = self._original_targets(source)
        overrides = {t.target: t for t in wanted.targets}
        ctx = self._mover_context(source)
        self.status.databases = [
            restore_target(
                ctx,
                self.namespace,
                d,
                originals.get(d.target),
                overrides.get(d.target),
                wanted.target_ready_timeout,
            )
            for d in dumped
        ]

    def _wanted_volumes(self, source: Source) -> list[VolumeResult]:
        wanted = self.spec.volumes or VolumeRestore()
        if not wanted.enabled:
            return []
        names = set(wanted.pvcs or ())
        included = set(self.spec.included_namespaces or ())
        return [
            v
            for v in source.manifest.volumes
            if v.result == "Succeeded"
            and (not names or v.pvc in names or f"{v.namespace}/{v.pvc}" in names)
            and (not included or v.namespace in included)
        ]

    def _restore_volumes(self, source: Source, volumes: list[VolumeResult]) -> None:
        if not volumes:
            return
        if self.spec.dry_run:
            self.status.volumes = [
                v.model_copy(update={"result": "Skipped", "message": "dry run: would restore"})
                for v in volumes
            ]
            return
        wanted = self.spec.volumes or VolumeRestore()
        ctx = self._mover_context(source)
        labels = {LABEL_RESTORED_BY: self.name}
        mapping = self.spec.namespace_mapping

        def one(v: VolumeResult) -> VolumeResult:
            task = task_for_restore(v, mapping.get(v.namespace, v.namespace))
            return restore_volume(ctx, v, task, wanted.overwrite_existing, labels)

        with ThreadPoolExecutor(max_workers=4) as pool:
            self.status.volumes = list(pool.map(one, volumes))

    def _record(self, source: Source, results: Results, seconds: float) -> None:
        c = results.counts
        self.status.counts = c
        self.status.errors = results.errors[:MAX_STATUS_ERRORS]
        if len(results.errors) > MAX_STATUS_ERRORS:
            self.status.warnings.append(
                f"{len(results.errors) - MAX_STATUS_ERRORS} more errors in the results file"
            )
        if source.location.writable:
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
        else:
            self.status.warnings.append("location is ReadOnly: per-object results not stored")
        would = "would be " if self.spec.dry_run else ""
        summary = (
            f"{c.created} {would}created, {c.updated} {would}updated, {c.skipped} skipped, "
            f"{c.failed} failed in {seconds:.1f}s"
        )
        if self.spec.dry_run:
            summary = "dry run, nothing changed: " + summary
        failed_items = sum(v.result == "Failed" for v in self.status.volumes) + sum(
            d.result == "Failed" for d in self.status.databases
        )
        if failed_items:
            summary += f"; {failed_items} PVC(s) or database target(s) failed"
        if (c.failed or failed_items) and (c.created or c.updated or c.skipped):
            self._finish("PartiallyFailed", "PartiallyFailed", summary)
        elif c.failed:
            self._finish("Failed", "RestoreFailed", summary)
        else:
            self._finish("Succeeded", "Completed", summary)


class Applier:
    """Applies cleaned objects one by one and records what happened to each."""

    def __init__(
        self, rest: Rest, spec: RestoreRequestSpec, restore: str, source: Source, results: Results
    ) -> None:
        self.rest = rest
        self.spec = spec
        self.results = results
        self.labels = {LABEL_RESTORED_BY: restore}
        self.source = source
        self.restored: dict[tuple[str, str | None, str], str] = {}  # (kind, ns, name) -> uid
        self.pending_owners: list[tuple[str, str | None, list[JSON]]] = []

    def ensure_namespaces(self, targets: list[str], chosen: list[Entry]) -> None:
        in_backup = {
            map_namespace(e.name, self.spec.namespace_mapping)
            for e in chosen
            if e.resource == "namespaces"
        }
        for ns in targets:
            if ns in in_backup or self.spec.dry_run:
                continue
            path = resource_path("", "v1", "namespaces", name=ns)
            if self.rest.get_or_none(path) is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": self.labels},
                }
                self.rest.apply(path, body, field_manager=FIELD_MANAGER)

    def restore(self, entry: Entry, obj: JSON) -> None:
        mapping = self.spec.namespace_mapping
        target_ns = map_namespace(entry.namespace, mapping)
        why = skip_reason(entry, obj)
        if why is not None:
            self.results.add(entry, target_ns, "skipped", reason="NotRestorable", message=why)
            return
        desired = clean(entry, obj, mapping, self.labels)
        name = desired["metadata"]["name"]
        path = resource_path(entry.group, entry.version, entry.plural, target_ns, name)
        try:
            existing = self.rest.get_or_none(path)
            if existing is not None and self.spec.existing_resource_policy == "skip":
                self.results.add(
                    entry,
                    target_ns,
                    "skipped",
                    reason="AlreadyExists",
                    message="exists; existingResourcePolicy is skip",
                )
                return
            action = "create" if existing is None else "update"
            diff = diff_paths(desired, existing) if existing is not None else []
            if self.spec.dry_run:
                self.rest.apply(
                    path, desired, field_manager=FIELD_MANAGER, force=True, dry_run=True
                )
                self.results.add(entry, target_ns, action, dryRun=True, changes=diff)
                return
            applied = self.rest.apply(path, desired, field_manager=FIELD_MANAGER, force=True)
        except ApiError as err:
            self.results.add(
                entry, target_ns, "failed", reason=err.reason or "Rejected", message=err.message
            )
            return
        self.results.add(entry, target_ns, action, changes=diff)
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


def run_restore(clients: Clients, body: JSON) -> None:
    RestoreRun(clients, body).run()
