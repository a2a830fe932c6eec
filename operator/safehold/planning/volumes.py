"""Pure planning of volume work: which PVCs, in which mode, read as whom, on which node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from safehold.api.base import JSON
from safehold.api.content import VolumeMode, Volumes
from safehold.api.errors import Failure
from safehold.api.labels import LABEL_POD_SECURITY_ENFORCE, LABEL_VOLUME_MOVER
from safehold.planning.builders import DEFAULT_MOVER_UID
from safehold.planning.selection import labels_match

# Pod Security levels that admit the root mover (UID 0, capabilities of the baseline list).
ROOT_MOVER_LEVELS = ("baseline", "privileged")


@dataclass(frozen=True)
class VolumeTask:
    """One PVC to protect."""

    namespace: str
    pvc: str
    mode: VolumeMode
    snapshot_class: str | None
    capacity: str | None
    storage_class: str | None
    access_modes: tuple[str, ...]
    node: str | None
    run_as_user: int
    run_as_group: int
    fs_group: int | None
    root_mover: bool = False
    """Moved by the root mover (the namespace opted in): UID 0, the capabilities of its verb."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pvc}"


def mode_for(pvc: JSON, volumes: Volumes) -> tuple[VolumeMode, str | None] | None:
    """The first rule whose selector matches the PVC; None when no rule does."""
    labels = (pvc.get("metadata") or {}).get("labels") or {}
    for rule in volumes.rules:
        if labels_match(labels, rule.pvc_selector):
            return rule.mode, rule.volume_snapshot_class_name
    return None


def consumers(pvc: JSON, pods: Sequence[JSON]) -> list[JSON]:
    """Running or pending pods that mount the PVC."""
    name = pvc["metadata"]["name"]
    found = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            if (vol.get("persistentVolumeClaim") or {}).get("claimName") == name:
                found.append(pod)
                break
    return found


def identity(pods: Sequence[JSON], volumes: Volumes) -> tuple[int, int, int | None]:
    """UID, GID and fsGroup the mover reads as: the override, else the consuming pod's (its
    pod-level security context, then its first container's), else a non-root default."""
    override = volumes.mover_security
    uid = gid = fs_group = None
    for pod in pods:
        spec = pod.get("spec") or {}
        psc = spec.get("securityContext") or {}
        csc = ((spec.get("containers") or [{}])[0]).get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        fs_group = psc.get("fsGroup")
        break
    if override is not None:
        uid = override.run_as_user or uid
        gid = override.run_as_group if override.run_as_group is not None else gid
        fs_group = override.fs_group if override.fs_group is not None else fs_group
    uid = uid if uid else DEFAULT_MOVER_UID  # restricted pods never run as root
    gid = gid if gid is not None else uid
    return int(uid), int(gid), fs_group


def plan_volumes(pvcs: Sequence[JSON], pods: Sequence[JSON], volumes: Volumes) -> list[VolumeTask]:
    tasks = []
    for pvc in sorted(pvcs, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        chosen = mode_for(pvc, volumes)
        if chosen is None:
            continue
        mode, snapshot_class = chosen
        users = consumers(
            pvc, [p for p in pods if p["metadata"]["namespace"] == pvc["metadata"]["namespace"]]
        )
        uid, gid, fs_group = identity(users, volumes)
        spec = pvc.get("spec") or {}
        node = next(
            (
                (p.get("spec") or {}).get("nodeName")
                for p in users
                if (p.get("spec") or {}).get("nodeName")
            ),
            None,
        )
        rwo = "ReadWriteOnce" in (spec.get("accessModes") or []) or "ReadWriteOncePod" in (
            spec.get("accessModes") or []
        )
        tasks.append(
            VolumeTask(
                namespace=pvc["metadata"]["namespace"],
                pvc=pvc["metadata"]["name"],
                mode=mode,
                snapshot_class=snapshot_class,
                capacity=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
                storage_class=spec.get("storageClassName"),
                access_modes=tuple(spec.get("accessModes") or ()),
                node=node if rwo else None,
                run_as_user=uid,
                run_as_group=gid,
                fs_group=fs_group,
            )
        )
    return tasks


class MoverNotAdmitted(Failure):
    """The namespace asks for the root mover but does not admit it, or asks for no known one."""


def root_mover(namespace: JSON) -> bool:
    """Whether the volume movers of this Namespace run as the root mover: only when a cluster
    admin labelled it `safehold.io/volume-mover=root` *and* its Pod Security enforces a level
    that admits root pods with those capabilities, so a mover there never holds more than any
    pod of the namespace could. Raises MoverNotAdmitted when the label asks for it anyway."""
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    wanted = labels.get(LABEL_VOLUME_MOVER, "restricted")
    if wanted == "restricted":
        return False
    name = meta.get("name", "")
    if wanted != "root":
        raise MoverNotAdmitted(
            "InvalidMoverLabel",
            f"namespace {name}: {LABEL_VOLUME_MOVER}={wanted!r} names no mover "
            "(root or restricted)",
        )
    level = labels.get(LABEL_POD_SECURITY_ENFORCE)
    if level not in ROOT_MOVER_LEVELS:
        raise MoverNotAdmitted(
            "RootMoverNotAdmitted",
            f"namespace {name} asks for the root mover, which runs as UID 0 with CHOWN, "
            f"DAC_OVERRIDE, FOWNER and FSETID, but its Pod Security "
            f"({LABEL_POD_SECURITY_ENFORCE}={level or '<unset>'}) does not admit that: "
            "a cluster admin labels it enforce=baseline (or privileged) to allow it",
        )
    return True
