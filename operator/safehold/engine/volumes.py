"""Volume data of a backup and of a restore, one mover Job (or VolumeSnapshot) per PVC.

PVCs move in parallel, bounded by `volumes.parallelism`; a PVC that fails does not stop the
others. Temporary objects (snapshot+move: the VolumeSnapshot and the PVC made from it) are
removed whatever happens. Movers read and write as the data's owner, or as the root mover in
namespaces that opted in (planning.volumes.root_mover).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from safehold.api.backup import VolumeResult
from safehold.api.base import JSON
from safehold.api.content import Volumes
from safehold.api.durations import parse_duration
from safehold.api.errors import Failure
from safehold.api.labels import LABEL_BACKUP, LABEL_INTERNAL
from safehold.contract import env as names
from safehold.contract.result import VolumeMoved
from safehold.engine.movers import MoverFailed, MoverLauncher, MoverRun, RepositoryAccess
from safehold.engine.settings import restic_cache_dir
from safehold.kube.rest import ApiError, Rest
from safehold.planning.builders import (
    DEFAULT_MOVER_UID,
    ROOT_BACKUP_CAPABILITIES,
    ROOT_RESTORE_CAPABILITIES,
    SNAPSHOT_GROUP,
    SNAPSHOT_VERSION,
    MoverPod,
    VolumeMount,
    pvc_body,
    volume_snapshot_body,
)
from safehold.planning.names import label_value, object_name
from safehold.planning.resource_types import resource_path
from safehold.planning.volumes import VolumeTask, plan_volumes, root_mover
from safehold.storage import restic
from safehold.storage.s3 import delete_prefix, make_client

MOUNT = "/data"


class VolumeError(Failure):
    """One PVC failed (or was skipped, for TargetNotEmpty)."""


def list_tasks(rest: Rest, namespaces: Sequence[str], volumes: Volumes) -> list[VolumeTask]:
    pvcs: list[JSON] = []
    pods: list[JSON] = []
    for ns in namespaces:
        for page in rest.list_pages(resource_path("", "v1", "persistentvolumeclaims", ns)):
            pvcs += page
        for page in rest.list_pages(resource_path("", "v1", "pods", ns)):
            pods += page
    return plan_volumes(pvcs, pods, volumes)


def with_mover(rest: Rest, task: VolumeTask) -> VolumeTask:
    """The task as its namespace wants it moved: as the root mover (UID 0) where the
    Namespace opted in and admits it; raises MoverNotAdmitted where it opted in but does not."""
    namespace = rest.get_or_none(resource_path("", "v1", "namespaces", None, task.namespace))
    if namespace is None or not root_mover(namespace):
        return task
    return dataclasses.replace(task, root_mover=True, run_as_user=0, run_as_group=0, fs_group=None)


def _mover_pod(
    volumes: Volumes, verb: str, task: VolumeTask, claim: str, read_only: bool
) -> MoverPod:
    root = task.root_mover
    capabilities = (
        ROOT_BACKUP_CAPABILITIES if verb == "volume-backup" else ROOT_RESTORE_CAPABILITIES
    )
    return MoverPod(
        volumes=[VolumeMount("data", claim, MOUNT, read_only)],
        node=task.node,
        run_as_user=0 if root else task.run_as_user,
        run_as_group=0 if root else task.run_as_group,
        fs_group=None if root else task.fs_group,
        resources=volumes.mover_resources,
        deadline_seconds=int(parse_duration(volumes.mover_timeout).total_seconds()),
        capabilities=capabilities if root else (),
    )


def _snapshot_path(namespace: str, name: str | None = None) -> str:
    return resource_path(SNAPSHOT_GROUP, SNAPSHOT_VERSION, "volumesnapshots", namespace, name)


def _pvc_path(namespace: str, name: str | None = None) -> str:
    return resource_path("", "v1", "persistentvolumeclaims", namespace, name)


def _task_pvc(
    task: VolumeTask,
    name: str,
    labels: dict[str, str],
    size: str | None = None,
    snapshot: str | None = None,
) -> JSON:
    """A PVC shaped like the task's (access modes, class, size)."""
    return pvc_body(
        task.namespace,
        name,
        labels,
        access_modes=task.access_modes,
        size=size or task.capacity or "1Gi",
        storage_class=task.storage_class,
        snapshot=snapshot,
    )


def _move(
    launcher: MoverLauncher,
    volumes: Volumes,
    verb: str,
    task: VolumeTask,
    claim: str,
    suffix: str,
    *,
    access: RepositoryAccess,
    read_only: bool,
    env: dict[str, str] | None = None,
    delete_job: bool = False,
    on_progress: Callable[[JSON], None] | None = None,
) -> VolumeMoved:
    """One volume mover Job on `claim`, as the identity that owns the data."""
    run = MoverRun(
        verb=verb,
        namespace=task.namespace,
        subject=task.pvc,
        suffix=suffix,
        access=access,
        env={names.VOLUME_PATH: MOUNT, names.PVC: task.key, **(env or {})},
        pod=_mover_pod(volumes, verb, task, claim, read_only),
        delete_job=delete_job,
    )
    return launcher.launch(run, VolumeMoved, on_progress=on_progress)


def take_snapshot(launcher: MoverLauncher, volumes: Volumes, task: VolumeTask, name: str) -> JSON:
    """Create a VolumeSnapshot of the PVC and wait until it is ready to use."""
    rest = launcher.clients.rest
    labels = {LABEL_BACKUP: label_value(launcher.run_label), LABEL_INTERNAL: "true"}
    body = volume_snapshot_body(task.namespace, name, task.pvc, labels, task.snapshot_class)
    try:
        rest.create(_snapshot_path(task.namespace), body)
    except ApiError as err:
        if err.status == 404:
            raise VolumeError(
                "SnapshotAPIUnavailable",
                "the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshots "
                "(install the CSI snapshot CRDs and controller)",
            ) from None
        if err.status != 409:
            raise VolumeError("SnapshotFailed", err.message) from None
    timeout = parse_duration(volumes.snapshot_timeout).total_seconds()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = rest.get_or_none(_snapshot_path(task.namespace, name)) or {}
        status = snap.get("status") or {}
        if status.get("readyToUse"):
            return snap
        if (status.get("error") or {}).get("message"):
            raise VolumeError("SnapshotFailed", status["error"]["message"])
        time.sleep(1)
    raise VolumeError(
        "SnapshotTimeout", f"VolumeSnapshot {task.namespace}/{name} not ready after {timeout:.0f}s"
    )


def wait_bound(rest: Rest, namespace: str, name: str, timeout: float = 120) -> None:
    """Wait until a PVC is Bound (provisioned from its data source) before a mover reads it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pvc = rest.get_or_none(_pvc_path(namespace, name)) or {}
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return
        time.sleep(0.5)
    raise VolumeError("VolumeNotBound", f"PVC {namespace}/{name} not Bound after {timeout:.0f}s")


def _base_result(task: VolumeTask) -> VolumeResult:
    return VolumeResult(
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


def _move_from_snapshot(
    launcher: MoverLauncher,
    volumes: Volumes,
    task: VolumeTask,
    snapshot: JSON,
    access: RepositoryAccess,
    on_progress: Callable[[JSON], None] | None,
) -> VolumeMoved:
    """snapshot+move: the mover reads a temporary PVC made from the VolumeSnapshot; both
    temporary objects are removed afterwards."""
    rest = launcher.clients.rest
    snap_name = snapshot["metadata"]["name"]
    temp = object_name("safehold", launcher.run_label, task.pvc, "tmp")
    try:
        size = (snapshot.get("status") or {}).get("restoreSize")
        labels = {LABEL_BACKUP: label_value(launcher.run_label), LABEL_INTERNAL: "true"}
        rest.create(_pvc_path(task.namespace), _task_pvc(task, temp, labels, size, snap_name))
        wait_bound(rest, task.namespace, temp)
        return _move(
            launcher,
            volumes,
            "volume-backup",
            task,
            temp,
            "mv",
            access=access,
            read_only=True,
            delete_job=True,
            on_progress=on_progress,
        )
    finally:
        rest.delete_quietly(_pvc_path(task.namespace, temp))
        rest.delete_quietly(_snapshot_path(task.namespace, snap_name))


def _take(
    launcher: MoverLauncher,
    volumes: Volumes,
    task: VolumeTask,
    base: VolumeResult,
    on_progress: Callable[[JSON], None] | None,
) -> VolumeResult:
    """Protect one PVC in its mode: the result (without the timing)."""
    if launcher.clients.rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is None:
        raise VolumeError("PVCNotFound", f"PVC {task.key} does not exist")
    if task.mode == "snapshot":
        name = object_name("safehold", launcher.run_label, task.pvc)
        take_snapshot(launcher, volumes, task, name)
        return base.model_copy(update={"volume_snapshot": name})
    task = with_mover(launcher.clients.rest, task)
    access = launcher.namespace_repository(task.namespace, "append")
    try:
        moved = _move_task(launcher, volumes, task, access, on_progress)
    except MoverFailed as err:
        if err.document.get("snapshotId"):  # incomplete: recorded only so deletion removes it
            err.document["repository"] = access.key
        raise
    return base.model_copy(
        update={
            "snapshot_id": moved.snapshotId or None,
            "repository": access.key,
            "files": moved.files,
            "bytes": moved.bytes,
            "bytes_added": moved.bytesAdded,
            "source_path": moved.sourcePath or None,
            "run_as_user": 0 if task.root_mover else base.run_as_user,
            "run_as_group": 0 if task.root_mover else base.run_as_group,
        }
    )


def _move_task(
    launcher: MoverLauncher,
    volumes: Volumes,
    task: VolumeTask,
    access: RepositoryAccess,
    on_progress: Callable[[JSON], None] | None,
) -> VolumeMoved:
    """filesystem: the live PVC; snapshot+move: a copy made from a VolumeSnapshot of it."""
    if task.mode == "filesystem":
        return _move(
            launcher,
            volumes,
            "volume-backup",
            task,
            task.pvc,
            "bk",
            access=access,
            read_only=True,
            on_progress=on_progress,
        )
    snap_name = object_name("safehold", launcher.run_label, task.pvc)
    snapshot = take_snapshot(launcher, volumes, task, snap_name)
    return _move_from_snapshot(launcher, volumes, task, snapshot, access, on_progress)


def back_up_volume(
    launcher: MoverLauncher,
    volumes: Volumes,
    task: VolumeTask,
    on_bytes: Callable[[str, int], None] | None = None,
) -> VolumeResult:
    base = _base_result(task)
    if task.mode == "none":
        return base.model_copy(update={"result": "Skipped", "message": "mode none"})
    started = time.monotonic()
    try:
        taken = _take(launcher, volumes, task, base, _bytes_reporter(task, on_bytes))
    except Failure as err:
        update: dict[str, object] = {"result": "Failed", "message": err.summary()}
        if isinstance(err, MoverFailed) and err.document.get("repository"):
            # An incomplete snapshot (UnreadableFiles): never restored (the PVC Failed), kept
            # in the result so that deleting the backup removes it too.
            update["snapshot_id"] = str(err.document["snapshotId"])
            update["repository"] = str(err.document["repository"])
        taken = base.model_copy(update=update)
    return taken.model_copy(update={"duration_seconds": round(time.monotonic() - started, 3)})


def _bytes_reporter(
    task: VolumeTask, on_bytes: Callable[[str, int], None] | None
) -> Callable[[JSON], None] | None:
    if on_bytes is None:
        return None
    return lambda progress: on_bytes(task.key, int(progress.get("bytesDone", 0)))


def back_up_volumes(
    launcher: MoverLauncher,
    volumes: Volumes,
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
        result = back_up_volume(launcher, volumes, task, on_bytes)
        with lock:
            finished += 1
            moved_bytes[task.key] = result.bytes or moved_bytes.get(task.key, 0)
            report()
        return result

    with ThreadPoolExecutor(max_workers=volumes.parallelism) as pool:
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
        run_as_user=result.run_as_user or DEFAULT_MOVER_UID,
        run_as_group=(
            result.run_as_group if result.run_as_group is not None else DEFAULT_MOVER_UID
        ),
        fs_group=result.run_as_group,
    )


def _restore_from_snapshot(
    rest: Rest, backed_up: VolumeResult, task: VolumeTask, labels: dict[str, str]
) -> VolumeResult:
    """snapshot mode: a missing PVC is created from the backup's VolumeSnapshot."""
    base = VolumeResult(namespace=task.namespace, pvc=task.pvc, mode=task.mode, result="Succeeded")
    if not backed_up.volume_snapshot:
        raise VolumeError("SnapshotMissing", "the backup recorded no VolumeSnapshot")
    if task.namespace != backed_up.namespace:
        raise VolumeError(
            "SnapshotNamespace",
            f"a VolumeSnapshot restores only into its own namespace {backed_up.namespace}",
        )
    if rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is not None:
        return base.model_copy(
            update={
                "result": "Skipped",
                "message": "PVC exists; snapshot restores create missing PVCs only",
            }
        )
    body = _task_pvc(task, task.pvc, labels, task.capacity, backed_up.volume_snapshot)
    rest.create(_pvc_path(task.namespace), body)
    return base.model_copy(update={"volume_snapshot": backed_up.volume_snapshot})


def _restoring_mover(rest: Rest, backed_up: VolumeResult, task: VolumeTask) -> VolumeTask:
    """The mover that writes the data back; data the root mover read (files of several
    owners) needs it again, or the owners would be lost without a word."""
    task = with_mover(rest, task)
    if backed_up.run_as_user == 0 and not task.root_mover:
        raise VolumeError(
            "RootMoverRequired",
            f"the root mover backed up PVC {backed_up.namespace}/{backed_up.pvc}, so only it "
            f"restores its owners; namespace {task.namespace} does not use it "
            "(see docs/volumes.md, the root mover)",
        )
    return task


@contextlib.contextmanager
def _readable(
    launcher: MoverLauncher, backed_up: VolumeResult, target_namespace: str
) -> Iterator[tuple[RepositoryAccess, str]]:
    """Read access, for a mover in `target_namespace`, to the backed-up snapshot: (access,
    snapshot id). Direct when the snapshot lives in that namespace's own repository; else a
    copy of that one snapshot in a scratch repository of its own, removed afterwards, so the
    mover can open nothing of another namespace (a mapped restore, or a backup made before
    volume data had repositories per namespace)."""
    location = launcher.location
    layout = location.s3.layout
    key = backed_up.repository or layout.repository(launcher.owner)
    snapshot = backed_up.snapshot_id or ""
    if key == layout.namespace_repository(launcher.owner, target_namespace):
        yield RepositoryAccess(key, location.repository_password_for(key), "read"), snapshot
        return
    access, scratch = launcher.scratch_repository(backed_up.pvc)
    try:
        source = location.repository_at(key, restic_cache_dir())
        yield access, restic.copy_snapshot(source, scratch, snapshot)
    finally:
        delete_prefix(make_client(location.s3), layout.bucket, layout.key(access.key) + "/")


def restore_volume(
    launcher: MoverLauncher,
    volumes: Volumes,
    backed_up: VolumeResult,
    task: VolumeTask,
    overwrite: bool,
    labels: dict[str, str],
    verify: bool = False,
) -> VolumeResult:
    base = VolumeResult(namespace=task.namespace, pvc=task.pvc, mode=task.mode, result="Succeeded")
    rest = launcher.clients.rest
    started = time.monotonic()
    try:
        if task.mode == "snapshot":
            return _restore_from_snapshot(rest, backed_up, task, labels)
        if not backed_up.snapshot_id:
            raise VolumeError("SnapshotMissing", "the backup recorded no restic snapshot")
        task = _restoring_mover(rest, backed_up, task)
        if rest.get_or_none(_pvc_path(task.namespace, task.pvc)) is None:
            rest.create(_pvc_path(task.namespace), _task_pvc(task, task.pvc, labels))
        with _readable(launcher, backed_up, task.namespace) as (access, snapshot):
            env = {
                names.SNAPSHOT_ID: snapshot,
                names.SNAPSHOT_PATH: quote(backed_up.source_path or "", safe=""),
                names.OVERWRITE: "true" if overwrite else "false",
                names.VERIFY: "true" if verify else "false",
            }
            moved = _move(
                launcher,
                volumes,
                "volume-restore",
                task,
                task.pvc,
                "rs",
                access=access,
                read_only=False,
                env=env,
            )
    except Failure as err:
        return base.model_copy(update={"result": "Failed", "message": err.summary()})
    if moved.skipped:  # the mover left a non-empty PVC alone: its Job completed
        message = f"{moved.reason}: {moved.message}"
        return base.model_copy(update={"result": "Skipped", "message": message})
    return base.model_copy(
        update={
            "files": moved.files,
            "snapshot_id": backed_up.snapshot_id,
            "duration_seconds": round(time.monotonic() - started, 3),
        }
    )
