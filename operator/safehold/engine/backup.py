"""One Backup run of Kubernetes objects: resolve, export, upload, record.

Nothing here deletes data. A run that fails leaves no restorable manifest: either none, or one
whose phase says Failed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from safehold import metrics
from safehold.api.backup import (
    BackupSpec,
    BackupStatus,
    DatabaseResult,
    Progress,
    ResourceSummary,
    VolumeResult,
)
from safehold.api.content import BackupContent, Hook, Hooks, Volumes
from safehold.api.kinds import BACKUP, POLICY
from safehold.api.policy import BackupPolicySpec
from safehold.config import LABEL_POLICY, operator_namespace, scratch_dir
from safehold.engine.common import RunError, custom_path, load_location, versions
from safehold.engine.databases import dump_targets
from safehold.engine.runs import OneShotRun
from safehold.engine.volumes import MoverContext, back_up_volumes, list_tasks
from safehold.kube.clients import Clients
from safehold.kube.discovery import discover
from safehold.kube.execs import run_exec
from safehold.kube.export import Exporter, ExportResult, custom_resource_types
from safehold.kube.locations import ResolvedLocation
from safehold.kube.rest import resource_path
from safehold.planning.dependencies import Dependencies
from safehold.planning.durations import parse_duration
from safehold.planning.hooks import plan_hooks, verdict
from safehold.planning.runs import Outcome, running
from safehold.planning.selection import (
    Scope,
    SelectionError,
    cluster_types,
    select_types,
    selector_string,
)
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, ExportInfo, write_manifest
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
JSON = dict[str, Any]


@dataclass
class Plan:
    namespace: str
    name: str
    uid: str
    generation: int | None
    policy: str | None
    content: BackupContent
    location: ResolvedLocation
    namespaces: list[str]
    ttl: str | None


def _content(
    clients: Clients, namespace: str, spec: BackupSpec
) -> tuple[str | None, BackupContent]:
    if spec.policy_ref is None:
        return None, spec
    name = spec.policy_ref.name
    body = clients.rest.get_or_none(custom_path(POLICY.plural, namespace, name))
    if body is None:
        raise RunError("PolicyNotFound", f"BackupPolicy {namespace}/{name} does not exist")
    return name, BackupPolicySpec.model_validate(body.get("spec") or {})


def _namespaces(clients: Clients, scope: Scope, content: BackupContent) -> list[str]:
    sel = content.selection
    try:
        named = scope.backup_namespaces(
            sel.namespaces, sel.namespace_selector, sel.include_cluster_resources
        )
    except SelectionError as err:
        raise RunError(err.reason, str(err)) from None
    if named is None:
        selector = selector_string(sel.namespace_selector)
        found = sorted(
            ns["metadata"]["name"]
            for page in clients.rest.list_pages("/api/v1/namespaces", label_selector=selector)
            for ns in page
        )
        if not found:
            raise RunError("NamespaceNotFound", f"no namespace matches selector {selector!r}")
        return found
    missing = [
        ns
        for ns in named
        if clients.rest.get_or_none(resource_path("", "v1", "namespaces", name=ns)) is None
    ]
    if missing:
        raise RunError("NamespaceNotFound", f"namespace {', '.join(missing)} does not exist")
    return named


def plan_backup(clients: Clients, body: JSON) -> Plan:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = BackupSpec.model_validate(body.get("spec") or {})
    policy, content = _content(clients, namespace, spec)
    if not content.storage_location:
        raise RunError("InvalidSpec", "no storageLocation: set it or a policyRef")
    scope = Scope(namespace, operator_namespace())
    namespaces = _namespaces(clients, scope, content)
    location = load_location(clients, namespace, content.storage_location, need_write=True)
    return Plan(
        namespace,
        name,
        meta["uid"],
        meta.get("generation"),
        policy,
        content,
        location,
        namespaces,
        spec.ttl,
    )


class BackupRun(OneShotRun[BackupStatus]):
    """Executes one plan and keeps the Backup's status current."""

    info = BACKUP
    status_model = BackupStatus

    def _finished(self, outcome: Outcome) -> None:
        metrics.backup_finished(self.namespace, self.status, outcome)

    def _run(self) -> None:
        now = datetime.now(UTC)
        self.status.start_time = now
        try:
            plan = plan_backup(self.clients, self.body)
        except RunError as err:
            self._finish("Failed", err.reason, str(err))
            return
        self.status.storage_location = plan.content.storage_location
        self.status.policy = plan.policy
        self.status.conditions = running(
            self.status.conditions,
            f"exporting {len(plan.namespaces)} namespace(s)",
            self.generation,
            now,
        )
        self._write()
        if plan.policy:
            self.clients.rest.merge_patch(
                custom_path(BACKUP.plural, self.namespace, self.name),
                {"metadata": {"labels": {LABEL_POLICY: plan.policy}}},
            )
        self._execute(plan)

    def _progress(self, done: int) -> None:
        self.status.progress = Progress(items_done=done, items_total=0)
        try:
            self._write()
        except Exception:  # progress is best effort
            log.debug("progress update failed", exc_info=True)

    def _execute(self, plan: Plan) -> None:
        started = time.monotonic()
        root = scratch_dir() / "exports" / plan.namespace / plan.name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        manifest = BackupManifest(
            namespace=plan.namespace,
            name=plan.name,
            uid=plan.uid,
            policy=plan.policy,
            storage_location=plan.location.name,
            phase="Failed",
            start_time=self.status.start_time,
            namespaces=plan.namespaces,
            included_cluster_resources=plan.content.selection.include_cluster_resources,
        )
        s3 = make_client(plan.location.s3)
        hooks = plan.content.hooks or Hooks()
        pre_errors, hook_warnings = self._hooks(plan, hooks.pre)
        if pre_errors:
            post_errors, post_warnings = self._hooks(plan, hooks.post)  # post hooks always run
            self.status.errors = pre_errors + post_errors
            self.status.warnings = hook_warnings + post_warnings
            self._finish("Failed", "HookFailed", "; ".join(pre_errors)[:1000])
            return
        try:
            result = self._export(plan, root)
            exported = time.monotonic()
            repo = plan.location.repository(plan.namespace, str(scratch_dir() / "restic-cache"))
            restic.ensure_initialized(repo)
            summary = restic.backup_directory(
                repo,
                str(root),
                tags=[
                    f"safehold.io/backup={plan.namespace}/{plan.name}",
                    "safehold.io/content=resources",
                    f"safehold.io/uid={plan.uid}",
                ],
            )
        except (RunError, restic.ResticError) as err:
            manifest.reason, manifest.message = err.reason, str(err)
            manifest.completion_time = datetime.now(UTC)
            self._record_failure(s3, plan, manifest)
            self._finish("Failed", err.reason, str(err))
            return
        finally:
            shutil.rmtree(root, ignore_errors=True)
        volumes = self._volumes(plan)
        databases = self._databases(plan)
        post_errors, post_warnings = self._hooks(plan, hooks.post)
        result.warnings += hook_warnings + post_warnings
        failed = [v for v in volumes if v.result == "Failed"]
        failed_dbs = [d for d in databases if d.result == "Failed"]
        done = time.monotonic()
        resources = ResourceSummary(
            total=result.total,
            by_kind=dict(sorted(result.by_resource.items())),
            snapshot_id=summary.snapshot_id,
            sha256=result.sha256,
        )
        errors = [f"PVC {v.namespace}/{v.pvc}: {v.message}" for v in failed]
        errors += [f"database target {d.target}: {d.message}" for d in failed_dbs]
        errors += post_errors
        volume_bytes = sum(v.bytes or 0 for v in volumes) + sum(d.bytes or 0 for d in databases)
        outcome: Outcome = "PartiallyFailed" if errors else "Succeeded"
        manifest = manifest.model_copy(
            update={
                "phase": outcome,
                "volumes": volumes,
                "databases": databases,
                "errors": errors,
                "completion_time": datetime.now(UTC),
                "resources": resources,
                "export": ExportInfo(root=str(root), bytes=result.bytes),
                "size_bytes": result.bytes + volume_bytes,
                "warnings": result.warnings,
                "versions": versions(self.clients),
                "timings": {
                    "exportSeconds": round(exported - started, 3),
                    "uploadSeconds": round(done - exported, 3),
                    "totalSeconds": round(done - started, 3),
                },
            }
        )
        key = write_manifest(s3, plan.location.s3.layout, manifest)
        self.status.resources = resources
        self.status.size_bytes = result.bytes + volume_bytes
        self.status.volumes = volumes
        self.status.databases = databases
        self.status.errors = errors
        self.status.warnings = result.warnings
        self.status.storage_path = f"s3://{plan.location.s3.bucket}/{key}"
        self.status.progress = Progress(
            items_done=result.total, items_total=result.total, bytes_done=result.bytes
        )
        if plan.ttl:
            self.status.expires_at = datetime.now(UTC) + parse_duration(plan.ttl)
        note = f" with {len(result.warnings)} warning(s)" if result.warnings else ""
        moved = f", {len(volumes) - len(failed)}/{len(volumes)} PVC(s)" if volumes else ""
        if databases:
            moved += f", {len(databases) - len(failed_dbs)}/{len(databases)} database target(s)"
        failures = f"; failed: {'; '.join(errors)}" if errors else ""
        self._finish(
            outcome,
            "Completed",
            f"{result.total} objects from {len(plan.namespaces)} namespace(s){moved} backed up"
            f"{note} in {done - started:.1f}s{failures}"[:1000],
        )

    def _hooks(self, plan: Plan, hooks: list[Hook]) -> tuple[list[str], list[str]]:
        """Run hooks in the running pods they select: (errors, warnings)."""
        if not hooks:
            return [], []
        pods = [
            pod
            for ns in plan.namespaces
            for page in self.clients.rest.list_pages(resource_path("", "v1", "pods", ns))
            for pod in page
        ]
        planned, warnings = plan_hooks(hooks, pods)
        outcomes = [run_exec(self.clients.core, step) for step in planned]
        errors, failed_softly = verdict(outcomes)
        return errors, warnings + failed_softly

    def _mover_context(self, plan: Plan, volumes: Volumes | None = None) -> MoverContext:
        return MoverContext(
            self.clients.rest,
            plan.location,
            plan.namespace,
            f"{plan.namespace}/{plan.name}",
            plan.name,
            volumes or Volumes(),
            self.clients.core,
        )

    def _databases(self, plan: Plan) -> list[DatabaseResult]:
        """Dump every database target (each in its own mover Job)."""
        targets = plan.content.databases
        if not targets:
            return []
        self.status.conditions = running(
            self.status.conditions,
            f"dumping {len(targets)} database target(s)",
            self.generation,
            datetime.now(UTC),
        )
        with contextlib.suppress(Exception):
            self._write()
        return dump_targets(self._mover_context(plan), plan.namespace, targets)

    def _volumes(self, plan: Plan) -> list[VolumeResult]:
        """Move the PVCs of the selected namespaces (nothing when the backup has no volumes)."""
        spec = plan.content.volumes
        if spec is None:
            return []
        tasks = list_tasks(self.clients.rest, plan.namespaces, spec)
        if not tasks:
            return []
        repo = plan.location.repository(plan.namespace, str(scratch_dir() / "restic-cache"))
        # Locks left by a killed mover: restic removes only locks it can prove stale.
        with contextlib.suppress(restic.ResticError):
            restic.run(repo, ["unlock"], timeout=120)
        ctx = self._mover_context(plan, spec)
        self.status.conditions = running(
            self.status.conditions,
            f"moving {len(tasks)} PVC(s)",
            self.generation,
            datetime.now(UTC),
        )

        def progress(done: int, moved: int) -> None:
            self.status.progress = Progress(
                items_done=done, items_total=len(tasks), bytes_done=moved
            )
            with contextlib.suppress(Exception):
                self._write()

        progress(0, 0)
        return back_up_volumes(ctx, tasks, progress)

    def _export(self, plan: Plan, root: Any) -> ExportResult:
        rest = self.clients.rest
        types, warnings = discover(rest)
        sel = plan.content.selection
        try:
            namespaced = select_types(types, sel.included_resources, sel.excluded_resources)
        except SelectionError as err:
            raise RunError(err.reason, str(err)) from None
        exporter = Exporter(rest, root, self._progress)
        exporter.result.warnings += warnings
        deps = Dependencies()
        exporter.export_namespaced(
            namespaced,
            plan.namespaces,
            selector_string(sel.label_selector),
            custom_resource_types(rest),
            deps,
        )
        if sel.include_cluster_resources:
            exporter.export_cluster(cluster_types(types, sel.excluded_resources), deps)
        return exporter.finish()

    def _record_failure(self, s3: Any, plan: Plan, manifest: BackupManifest) -> None:
        try:
            write_manifest(s3, plan.location.s3.layout, manifest)
        except Exception:  # the bucket may be what failed; the status still says Failed
            log.warning("could not write the Failed manifest of %s/%s", plan.namespace, plan.name)


def run_backup(clients: Clients, body: JSON) -> None:
    BackupRun(clients, body).run()
