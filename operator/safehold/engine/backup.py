"""One Backup run: resolve what it takes, run the pre hooks, export and upload the objects,
move the volumes, dump the databases, run the post hooks, record the manifest.

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
from pathlib import Path

from safehold import __version__
from safehold.api.backup import (
    BackupSpec,
    BackupStatus,
    DatabaseResult,
    Progress,
    ResourceSummary,
    VolumeResult,
)
from safehold.api.base import JSON
from safehold.api.content import BackupContent, Hook, Hooks
from safehold.api.durations import parse_duration
from safehold.api.errors import Failure
from safehold.api.kinds import BACKUP, POLICY
from safehold.api.labels import LABEL_POLICY
from safehold.api.policy import BackupPolicySpec
from safehold.engine import metrics
from safehold.engine.databases import dump_targets, target_warnings
from safehold.engine.errors import RunError
from safehold.engine.locations import load_location, store_failed
from safehold.engine.movers import MoverLauncher
from safehold.engine.runs import OneShotRun
from safehold.engine.settings import operator_namespace, restic_cache_dir, scratch_dir
from safehold.engine.volumes import back_up_volumes, list_tasks
from safehold.kube.clients import Clients
from safehold.kube.discovery import discover
from safehold.kube.execs import run_exec
from safehold.kube.export import Exporter, ExportResult, custom_resource_types
from safehold.planning.conditions import set_condition
from safehold.planning.dependencies import Dependencies, left_out
from safehold.planning.hooks import plan_hooks, verdict
from safehold.planning.resource_types import resource_path
from safehold.planning.runs import Outcome, running
from safehold.planning.selection import (
    Scope,
    cluster_custom_types,
    cluster_types,
    select_types,
    selector_string,
    without_machinery,
)
from safehold.planning.trust import Untrusted
from safehold.storage import restic
from safehold.storage.catalog import BackupManifest, ExportInfo, read_manifest, write_manifest
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client, probe_bucket

log = logging.getLogger(__name__)


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


def backup_content(
    clients: Clients, namespace: str, spec: BackupSpec, labels: dict[str, str]
) -> tuple[str | None, BackupContent]:
    """(policy, content) of a Backup. A Backup with its own storageLocation is self-contained:
    a policy's runs carry the policy's content from when they were created, and the policy
    label names the policy. One that names a policyRef takes the policy's content as it is
    when the run starts."""
    if spec.policy_ref is None:
        return labels.get(LABEL_POLICY), spec
    policy = spec.policy_ref.name
    body = clients.rest.get_or_none(POLICY.path(namespace, policy))
    if body is None:
        raise RunError("PolicyNotFound", f"BackupPolicy {namespace}/{policy} does not exist")
    return policy, BackupPolicySpec.model_validate(body.get("spec") or {})


def _namespaces(clients: Clients, scope: Scope, content: BackupContent) -> list[str]:
    sel = content.selection
    named = scope.backup_namespaces(
        sel.namespaces, sel.namespace_selector, sel.include_cluster_resources
    )
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
    policy, content = backup_content(clients, namespace, spec, meta.get("labels") or {})
    if not content.storage_location:
        raise RunError("InvalidSpec", "no storageLocation: set it or a policyRef")
    scope = Scope(namespace, operator_namespace())
    namespaces = _namespaces(clients, scope, content)
    scope.check_database_targets(content.databases)
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


@dataclass
class Taken:
    """What a run took, item by item."""

    export: ExportResult
    snapshot_id: str
    volumes: list[VolumeResult]
    databases: list[DatabaseResult]
    errors: list[str]
    warnings: list[str]
    seconds: dict[str, float]

    @property
    def size_bytes(self) -> int:
        moved = sum(v.bytes or 0 for v in self.volumes) + sum(d.bytes or 0 for d in self.databases)
        return self.export.bytes + moved

    def resources(self) -> ResourceSummary:
        return ResourceSummary(
            total=self.export.total,
            by_kind=dict(sorted(self.export.by_resource.items())),
            snapshot_id=self.snapshot_id,
            sha256=self.export.sha256,
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
        except Failure as err:
            self._finish("Failed", err.reason, err.message)
            return
        self.status.storage_location = plan.content.storage_location
        self.status.policy = plan.policy
        self.status.run_uid = plan.uid
        try:
            self._preflight(plan)
        except Failure as failure:
            named = store_failed(self.clients, plan.location, failure)
            self._finish("Failed", named.reason, named.message)
            return
        self.status.conditions = running(
            self.status.conditions,
            f"exporting {len(plan.namespaces)} namespace(s)",
            self.generation,
            now,
        )
        self._write()
        if plan.policy:
            self.clients.rest.merge_patch(
                BACKUP.path(self.namespace, self.name),
                {"metadata": {"labels": {LABEL_POLICY: plan.policy}}},
            )
        self._execute(plan)

    def _preflight(self, plan: Plan) -> None:
        """Before anything is taken: the store answers (a store that does not fails the run in
        seconds, not after restic's timeout), and no earlier Backup of this name has its data
        in the bucket (this run must never overwrite that catalog entry)."""
        s3, layout = make_client(plan.location.s3), plan.location.s3.layout
        reachable = probe_bucket(s3, plan.location.s3, writable=False)
        if not reachable.ok:
            raise RunError(reachable.reason, reachable.message)
        try:
            found = read_manifest(s3, layout, plan.namespace, plan.name, privileged=True)
        except Untrusted:
            found = None  # an unreadable entry is reported by the catalog sync
        if found is None or found.uid in (None, plan.uid):
            return
        when = f"{found.completion_time:%Y-%m-%dT%H:%M:%SZ}" if found.completion_time else "?"
        raise RunError(
            "BackupNameInUse",
            f"the bucket of {plan.location.name} holds the data of an earlier Backup {plan.name} "
            f"({found.phase}, completed {when}, uid {found.uid}); its data is kept and this run "
            "takes nothing: choose another name, or delete that backup's data first "
            "(docs/backup-restore.md)",
        )

    def _progress(self, done: int) -> None:
        self.status.progress = Progress(items_done=done, items_total=0)
        try:
            self._write()
        except Exception:  # progress is best effort
            log.debug("progress update failed", exc_info=True)

    def _manifest(self, plan: Plan) -> BackupManifest:
        """The manifest of this run, Failed until the run succeeds."""
        return BackupManifest(
            namespace=plan.namespace,
            name=plan.name,
            uid=plan.uid,
            policy=plan.policy,
            storage_location=plan.location.name,
            phase="Failed",
            start_time=self.status.start_time,
            namespaces=plan.namespaces,
            included_cluster_resources=plan.content.selection.include_cluster_resources,
            content=plan.content,
        )

    def _execute(self, plan: Plan) -> None:
        started = time.monotonic()
        manifest = self._manifest(plan)
        hooks = plan.content.hooks or Hooks()
        pre_errors, hook_warnings = self._hooks(plan, hooks.pre)
        if pre_errors:
            post_errors, post_warnings = self._hooks(plan, hooks.post)  # post hooks always run
            self.status.errors = pre_errors + post_errors
            self.status.warnings = hook_warnings + post_warnings
            self._finish("Failed", "HookFailed", "; ".join(pre_errors)[:1000])
            return
        try:
            export, snapshot_id = self._export_and_upload(plan)
        except Failure as failure:
            named = store_failed(self.clients, plan.location, failure)
            manifest.reason, manifest.message = named.reason, named.message
            manifest.completion_time = datetime.now(UTC)
            self._record_failure(plan, manifest)
            self._finish("Failed", named.reason, named.message)
            return
        exported = time.monotonic()
        volumes = self._volumes(plan)
        databases = self._databases(plan)
        post_errors, post_warnings = self._hooks(plan, hooks.post)
        done = time.monotonic()
        errors = [
            f"PVC {v.namespace}/{v.pvc}: {v.message}" for v in volumes if v.result == "Failed"
        ]
        errors += [
            f"database target {d.target}: {d.message}" for d in databases if d.result == "Failed"
        ]
        taken = Taken(
            export=export,
            snapshot_id=snapshot_id,
            volumes=volumes,
            databases=databases,
            errors=errors + post_errors,
            warnings=export.warnings + hook_warnings + post_warnings + target_warnings(databases),
            seconds={
                "exportSeconds": round(exported - started, 3),
                "uploadSeconds": round(done - exported, 3),
                "totalSeconds": round(done - started, 3),
            },
        )
        self._complete(plan, manifest, taken)

    def _export_and_upload(self, plan: Plan) -> tuple[ExportResult, str]:
        """Export the selected objects into a scratch directory and store it in restic."""
        root = scratch_dir() / "exports" / plan.namespace / plan.name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        try:
            export = self._export(plan, root)
            repo = plan.location.repository(plan.namespace, restic_cache_dir())
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
        finally:
            shutil.rmtree(root, ignore_errors=True)
        export.root = str(root)
        return export, summary.snapshot_id

    def _complete(self, plan: Plan, manifest: BackupManifest, taken: Taken) -> None:
        outcome: Outcome = "PartiallyFailed" if taken.errors else "Succeeded"
        resources = taken.resources()
        manifest = manifest.model_copy(
            update={
                "phase": outcome,
                "volumes": taken.volumes,
                "databases": taken.databases,
                "errors": taken.errors,
                "completion_time": datetime.now(UTC),
                "resources": resources,
                "export": ExportInfo(root=taken.export.root, bytes=taken.export.bytes),
                "size_bytes": taken.size_bytes,
                "warnings": taken.warnings,
                "versions": _versions(self.clients),
                "timings": taken.seconds,
            }
        )
        key = write_manifest(make_client(plan.location.s3), plan.location.s3.layout, manifest)
        self.status.conditions = set_condition(
            self.status.conditions,
            "Restorable",
            "True",
            "InCatalog",
            f"in the catalog of location {plan.location.name}",
            self.generation,
            datetime.now(UTC),
        )
        self.status.resources = resources
        self.status.size_bytes = taken.size_bytes
        self.status.volumes = taken.volumes
        self.status.databases = taken.databases
        self.status.errors = taken.errors
        self.status.warnings = taken.warnings
        self.status.storage_path = f"s3://{plan.location.s3.bucket}/{key}"
        total = taken.export.total
        self.status.progress = Progress(
            items_done=total, items_total=total, bytes_done=taken.export.bytes
        )
        if plan.ttl:
            self.status.expires_at = datetime.now(UTC) + parse_duration(plan.ttl)
        self._finish(outcome, "Completed", _summary(plan, taken))

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

    def _launcher(self, plan: Plan) -> MoverLauncher:
        return MoverLauncher(self.clients, self.gateway, plan.location, plan.namespace, plan.name)

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
        return dump_targets(self._launcher(plan), plan.namespace, targets)

    def _volumes(self, plan: Plan) -> list[VolumeResult]:
        """Move the PVCs of the selected namespaces (nothing when the backup has no volumes)."""
        spec = plan.content.volumes
        if spec is None:
            return []
        tasks = list_tasks(self.clients.rest, plan.namespaces, spec)
        if not tasks:
            return []
        repo = plan.location.repository(plan.namespace, restic_cache_dir())
        # Locks left by a killed mover: restic removes only locks it can prove stale.
        with contextlib.suppress(restic.ResticError):
            restic.run(repo, ["unlock"], timeout=120)
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
        return back_up_volumes(self._launcher(plan), spec, tasks, progress)

    def _export(self, plan: Plan, root: Path) -> ExportResult:
        rest = self.clients.rest
        types, warnings = discover(rest)
        sel = plan.content.selection
        namespaced = select_types(types, sel.included_resources, sel.excluded_resources)
        exporter = Exporter(rest, root, self._progress)
        exporter.result.warnings += warnings
        deps = Dependencies()
        custom_groups = custom_resource_types(rest)
        exporter.export_namespaced(
            namespaced,
            plan.namespaces,
            without_machinery(selector_string(sel.label_selector)),
            custom_groups,
            deps,
        )
        custom = cluster_custom_types(types, custom_groups, sel.excluded_resources)
        if sel.include_cluster_resources:
            exporter.export_cluster(cluster_types(types, sel.excluded_resources), custom, deps)
        else:
            exporter.result.warnings += left_out(deps, custom)
        return exporter.finish()

    def _record_failure(self, plan: Plan, manifest: BackupManifest) -> None:
        try:
            write_manifest(make_client(plan.location.s3), plan.location.s3.layout, manifest)
        except Exception:  # the bucket may be what failed; the status still says Failed
            log.warning("could not write the Failed manifest of %s/%s", plan.namespace, plan.name)


def _summary(plan: Plan, taken: Taken) -> str:
    """The message of a finished run."""
    volumes, databases = taken.volumes, taken.databases
    note = f" with {len(taken.warnings)} warning(s)" if taken.warnings else ""
    failed_volumes = sum(v.result == "Failed" for v in volumes)
    failed_dbs = sum(d.result == "Failed" for d in databases)
    moved = f", {len(volumes) - failed_volumes}/{len(volumes)} PVC(s)" if volumes else ""
    if databases:
        moved += f", {len(databases) - failed_dbs}/{len(databases)} database target(s)"
    failures = f"; failed: {'; '.join(taken.errors)}" if taken.errors else ""
    seconds = taken.seconds["totalSeconds"]
    return (
        f"{taken.export.total} objects from {len(plan.namespaces)} namespace(s){moved} backed up"
        f"{note} in {seconds:.1f}s{failures}"
    )[:1000]


def _versions(clients: Clients) -> dict[str, str]:
    kube = clients.rest.get("/version").get("gitVersion", "unknown")
    return {"safehold": __version__, "kubernetes": str(kube), "restic": restic.version()}
