"""Volume data of a backup and of a restore, one mover Job (or VolumeSnapshot) per PVC.

PVCs move in parallel, bounded by `volumes.parallelism`; a PVC that fails does not stop the
others. Temporary objects (snapshot+move: the VolumeSnapshot and the PVC made from it) are
removed whatever happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from safehold.api.backup import VolumeResult
from safehold.api.content import Volumes
from safehold.kube.jobs import CA_DIR, LABEL_BACKUP, MoverSpec, VolumeMount, run_mover
from safehold.kube.locations import ResolvedLocation
from safehold.kube.rest import ApiError, Rest, resource_path
from safehold.planning.durations import parse_duration
from safehold.planning.volumes import VolumeTask, object_name, plan_volumes
from safehold.storage import restic

log = logging.getLogger(__name__)
JSON = dict[str, Any]
SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"
MOUNT = "/data"


class VolumeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MoverContext:
    """What every mover Job of one run shares."""

    rest: Rest
    location: ResolvedLocation
    repository_namespace: str
    run: str  # <namespace>/<name> of the Backup or RestoreRequest
    run_label: str
    volumes: Volumes
    location_core: Any = None  # CoreV1Api for Secrets in the run's namespace (databases)

    def secret_data(self) -> tuple[dict[str, str], str]:
        repo = self.location.repository(self.repository_namespace)
        ca = f"{CA_DIR}/ca.crt" if self.location.s3.ca_bundle else None
        data, options = restic.mover_environment(repo, ca)
        if self.location.s3.ca_bundle:
            data["ca.crt"] = self.location.s3.ca_bundle
        return data, options

    def run_job(
        self,
        verb: str,
        task: VolumeTask,
        claim: str,
        read_only: bool,
        env: dict[str, str],
        suffix: str,
        delete_job: bool = False,
        on_progress: Callable[[JSON], None] | None = None,
    ) -> JSON:
        data, options = self.secret_data()
        name = object_name("safehold", self.run_label, task.pvc, suffix)
        spec = MoverSpec(
            name=name,
            namespace=task.namespace,
            verb=verb,
            env={
                "SAFEHOLD_VOLUME_PATH": MOUNT,
                "SAFEHOLD_PVC": task.key,
                "SAFEHOLD_BACKUP": self.run,
                restic.OPTIONS_ENV: options,
                **env,
            },
            secret_name=name,
            secret_keys=[k for k in data if k != "ca.crt"],
            volumes=[VolumeMount("data", claim, MOUNT, read_only)],
            node=task.node,
            run_as_user=task.run_as_user,
            run_as_group=task.run_as_group,
            fs_group=task.fs_group,
            resources=self.volumes.mover_resources,
            labels={LABEL_BACKUP: self.run_label},
            deadline_seconds=int(parse_duration(self.volumes.mover_timeout).total_seconds()),
            has_ca="ca.crt" in data,
        )
        outcome = run_mover(self.rest, spec, data, on_progress=on_progress)
        if delete_job:  # its pod would keep a temporary PVC in use until the Job's TTL
            _delete(
                self.rest,
                resource_path("batch", "v1", "jobs", task.namespace, name),
                propagation="Foreground",
            )
        if not outcome.ok:
            raise VolumeError(outcome.reason, outcome.message)
        return outcome.result


def list_tasks(rest: Rest, namespaces: Sequence[str], volumes: Volumes) -> list[VolumeTask]:
    pvcs: list[JSON] = []
    pods: list[JSON] = []
    for ns in namespaces:
        for page in rest.list_pages(resource_path("", "v1", "persistentvolumeclaims", ns)):
            pvcs += page
        for page in rest.list_pages(resource_path("", "v1", "pods", ns)):
            pods += page
    return plan_volumes(pvcs, pods, volumes)


def _snapshot_path(namespace: str, name: str | None = None) -> str:
    return resource_path(SNAPSHOT_GROUP, SNAPSHOT_VERSION, "volumesnapshots", namespace, name)


def _pvc_path(namespace: str, name: str | None = None) -> str:
    return resource_path("", "v1", "persistentvolumeclaims", namespace, name)


def take_snapshot(ctx: MoverContext, task: VolumeTask, name: str) -> JSON:
    """Create a VolumeSnapshot of the PVC and wait until it is ready to use."""
    body: JSON = {
        "apiVersion": f"{SNAPSHOT_GROUP}/{SNAPSHOT_VERSION}",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": task.namespace,
            "labels": {LABEL_BACKUP: ctx.run_label},
        },
        "spec": {"source": {"persistentVolumeClaimName": task.pvc}},
    }
    if task.snapshot_class:
        body["spec"]["volumeSnapshotClassName"] = task.snapshot_class
    try:
        ctx.rest.create(_snapshot_path(task.namespace), body)
    except ApiError as err:
        if err.status == 404:
            raise VolumeError(
                "SnapshotAPIUnavailable",
                "the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshots "
                "(install the CSI snapshot CRDs and controller)",
            ) from None
        if err.status != 409:
            raise VolumeError("SnapshotFailed", err.message) from None
    timeout = parse_duration(ctx.volumes.snapshot_timeout).total_seconds()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = ctx.rest.get_or_none(_snapshot_path(task.namespace, name)) or {}
        status = snap.get("status") or {}
        if status.get("readyToUse"):
            return snap
        if (status.get("error") or {}).get("message"):
            raise VolumeError("SnapshotFailed", status["error"]["message"])
        time.sleep(1)
    raise VolumeError(
        "SnapshotTimeout", f"VolumeSnapshot {task.namespace}/{name} not ready after {timeout:.0f}s"
    )


def pvc_body(
    task: VolumeTask,
    name: str,
    labels: dict[str, str],
    size: str | None = None,
    snapshot: str | None = None,
) -> JSON:
    """A PVC shaped like the task's (access modes, class, size), optionally made from a
    VolumeSnapshot."""
    spec: JSON = {
        "accessModes": list(task.access_modes) or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size or task.capacity or "1Gi"}},
    }
    if snapshot is not None:
        spec["dataSource"] = {
            "apiGroup": SNAPSHOT_GROUP,
            "kind": "VolumeSnapshot",
            "name": snapshot,
        }
    if task.storage_class:
        spec["storageClassName"] = task.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": task.namespace, "labels": labels},
        "spec": spec,
    }


def wait_bound(rest: Rest, namespace: str, name: str, timeout: float = 120) -> None:
    """Wait until a PVC is Bound (provisioned from its data source) before a mover reads it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pvc = rest.get_or_none(_pvc_path(namespace, name)) or {}
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return
        time.sleep(0.5)
    raise VolumeError("VolumeNotBound", f"PVC {namespace}/{name} not Bound after {timeout:.0f}s")


def _delete(rest: Rest, path: str, propagation: str = "Background") -> None:
    try:
        rest.request("DELETE", path, query={"propagationPolicy": propagation})
    except ApiError as err:
        if err.status != 404:
            log.warning("could not delete %s: %s", path, err)


def back_up_volume(
    ctx: MoverContext, task: VolumeTask, on_bytes: Callable[[str, int], None] | None = None
) -> VolumeResult:
    base = VolumeResult(
        namespace=task.namespace,
        pvc=task.pvc,
        mode=task.mode,
        result="Succeeded",
        capacity=task.capacity,
        storage_class=task.storage_class,
        access_modes=list(task.access_modes),
        run_as_user=task.run_as_user,
        run_as_group=task.run_as_group,
    )
    started = time.monotonic()
    try:
        if task.mode == "none":
            return base.model_copy(update={"result": "Skipped", "message": "mode none"})
        if ctx.rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is None:
            raise VolumeError("PVCNotFound", f"PVC {task.key} does not exist")
        if task.mode == "filesystem":
            moved = ctx.run_job(
                "volume-backup",
                task,
                task.pvc,
                True,
                {},
                "bk",
                on_progress=_bytes_reporter(task, on_bytes),
            )
            return _moved(base, moved, started)
        snap_name = object_name("safehold", ctx.run_label, task.pvc)
        snapshot = take_snapshot(ctx, task, snap_name)
        if task.mode == "snapshot":
            return base.model_copy(
                update={
                    "volume_snapshot": snap_name,
                    "duration_seconds": time.monotonic() - started,
                }
            )
        temp = object_name("safehold", ctx.run_label, task.pvc, "tmp")
        try:
            size = (snapshot.get("status") or {}).get("restoreSize")
            ctx.rest.create(
                _pvc_path(task.namespace),
                pvc_body(task, temp, {LABEL_BACKUP: ctx.run_label}, size, snap_name),
            )
            wait_bound(ctx.rest, task.namespace, temp)
            moved = ctx.run_job(
                "volume-backup",
                task,
                temp,
                True,
                {},
                "mv",
                delete_job=True,
                on_progress=_bytes_reporter(task, on_bytes),
            )
        finally:
            _delete(ctx.rest, _pvc_path(task.namespace, temp))
            _delete(ctx.rest, _snapshot_path(task.namespace, snap_name))
        return _moved(base, moved, started)
    except VolumeError as err:
        return base.model_copy(
            update={
                "result": "Failed",
                "message": f"{err.reason}: {err}",
                "duration_seconds": time.monotonic() - started,
            }
        )
    except ApiError as err:
        return base.model_copy(
            update={"result": "Failed", "message": f"{err.reason}: {err.message}"}
        )


def _moved(base: VolumeResult, moved: JSON, started: float) -> VolumeResult:
    return base.model_copy(
        update={
            "snapshot_id": moved.get("snapshotId"),
            "files": moved.get("files"),
            "bytes": moved.get("bytes"),
            "bytes_added": moved.get("bytesAdded"),
            "source_path": moved.get("sourcePath"),
            "duration_seconds": round(time.monotonic() - started, 3),
        }
    )


def _bytes_reporter(
    task: VolumeTask, on_bytes: Callable[[str, int], None] | None
) -> Callable[[JSON], None] | None:
    if on_bytes is None:
        return None
    return lambda progress: on_bytes(task.key, int(progress.get("bytesDone", 0)))


def back_up_volumes(
    ctx: MoverContext,
    tasks: Sequence[VolumeTask],
    progress: Callable[[int, int], None] | None = None,
) -> list[VolumeResult]:
    """All PVCs, `parallelism` at a time, in the order of `tasks`. `progress(done, bytes)` is
    called as PVCs finish and as running movers report bytes read."""
    lock = threading.Lock()
    moved_bytes: dict[str, int] = {}
    finished = 0

    def report() -> None:
        if progress is not None:
            progress(finished, sum(moved_bytes.values()))

    def on_bytes(key: str, done: int) -> None:
        with lock:
            moved_bytes[key] = done
            report()

    def one(task: VolumeTask) -> VolumeResult:
        nonlocal finished
        result = back_up_volume(ctx, task, on_bytes)
        with lock:
            finished += 1
            moved_bytes[task.key] = result.bytes or moved_bytes.get(task.key, 0)
            report()
        return result

    with ThreadPoolExecutor(max_workers=ctx.volumes.parallelism) as pool:
        return list(pool.map(one, tasks))


def task_for_restore(result: VolumeResult, namespace: str) -> VolumeTask:
    """The restore of one backed-up PVC into `namespace`, as the identity that owned the data."""
    return VolumeTask(
        namespace=namespace,
        pvc=result.pvc,
        mode=result.mode,  # type: ignore[arg-type]
        snapshot_class=None,
        capacity=result.capacity,
        storage_class=result.storage_class,
        access_modes=tuple(result.access_modes),
        node=None,
        run_as_user=result.run_as_user or 65532,
        run_as_group=result.run_as_group if result.run_as_group is not None else 65532,
        fs_group=result.run_as_group,
    )


def _ensure_pvc(rest: Rest, task: VolumeTask, labels: dict[str, str]) -> None:
    if rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is None:
        rest.create(_pvc_path(task.namespace), pvc_body(task, task.pvc, labels))


def restore_volume(
    ctx: MoverContext,
    backed_up: VolumeResult,
    task: VolumeTask,
    overwrite: bool,
    labels: dict[str, str],
) -> VolumeResult:
    base = VolumeResult(namespace=task.namespace, pvc=task.pvc, mode=task.mode, result="Succeeded")
    started = time.monotonic()
    try:
        if task.mode == "snapshot":
            if not backed_up.volume_snapshot:
                raise VolumeError("SnapshotMissing", "the backup recorded no VolumeSnapshot")
            if task.namespace != backed_up.namespace:
                raise VolumeError(
                    "SnapshotNamespace",
                    f"a VolumeSnapshot restores only into its own namespace {backed_up.namespace}",
                )
            if ctx.rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is not None:
                return base.model_copy(
                    update={
                        "result": "Skipped",
                        "message": "PVC exists; snapshot restores create missing PVCs only",
                    }
                )
            ctx.rest.create(
                _pvc_path(task.namespace),
                pvc_body(task, task.pvc, labels, task.capacity, backed_up.volume_snapshot),
            )
            return base.model_copy(update={"volume_snapshot": backed_up.volume_snapshot})
        if not backed_up.snapshot_id:
            raise VolumeError("SnapshotMissing", "the backup recorded no restic snapshot")
        _ensure_pvc(ctx.rest, task, labels)
        moved = ctx.run_job(
            "volume-restore",
            task,
            task.pvc,
            False,
            {
                "SAFEHOLD_SNAPSHOT_ID": backed_up.snapshot_id,
                "SAFEHOLD_SNAPSHOT_PATH": quote(backed_up.source_path or "", safe=""),
                "SAFEHOLD_OVERWRITE": "true" if overwrite else "false",
            },
            "rs",
        )
        return base.model_copy(
            update={
                "files": moved.get("files"),
                "snapshot_id": backed_up.snapshot_id,
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )
    except VolumeError as err:
        result = "Skipped" if err.reason == "TargetNotEmpty" else "Failed"
        return base.model_copy(update={"result": result, "message": f"{err.reason}: {err}"})
    except ApiError as err:
        return base.model_copy(
            update={"result": "Failed", "message": f"{err.reason}: {err.message}"}
        )
