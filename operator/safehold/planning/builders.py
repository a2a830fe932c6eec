"""Pure builders of every object Safehold creates: Backups (from a policy, from the catalog,
from the CLI), mover Jobs with their Secret and ServiceAccount, PVCs, VolumeSnapshots and
Namespaces. Nothing here talks to the API server, so each body is unit-testable.

Every mover pod runs under the restricted Pod Security profile: non-root numeric UID, no
privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root
filesystem (an emptyDir holds /tmp and restic's cache), no service-account token. The one
exception is the opt-in root mover of volumes (docs/volumes.md): UID 0 with only the
capabilities its verb needs, which the baseline profile admits. Secrets
reach it only as Secret-backed environment variables or as files of its own Secret (a
database server's CA).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safehold import API_VERSION
from safehold.api.backup import BackupSpec
from safehold.api.base import JSON, ResourceRequirements
from safehold.api.content import BackupContent
from safehold.api.kinds import BACKUP, POLICY, VERIFICATION
from safehold.api.labels import ANNOTATION_SCHEDULED_TIME, LABEL_COMPONENT, LABEL_POLICY
from safehold.api.policy import BackupPolicySpec
from safehold.api.verification import DrillSettings
from safehold.contract.env import DEFAULT_TERMINATION_LOG
from safehold.contract.env import TERMINATION_LOG as TERMINATION_LOG_ENV

SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"
FILES_DIR = "/etc/safehold/files"  # Secret keys a mover reads as files (MoverSpec.file_keys)
SCRATCH = "/tmp"
DEFAULT_MOVER_UID = 65532
# The root mover's capabilities, each admitted by the baseline Pod Security profile.
# Reading: DAC_OVERRIDE (DAC_READ_SEARCH would do, but only the privileged profile admits it;
# on the read-only mount it can write nothing either way).
ROOT_BACKUP_CAPABILITIES = ("DAC_OVERRIDE",)
# Writing: into directories of any owner, then owners (CHOWN), modes and times of files it
# does not own (FOWNER), setgid bits of groups it is not in (FSETID).
ROOT_RESTORE_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID")


# ---------------------------------------------------------------------- Backups
def backup_object(
    name: str,
    namespace: str | None,
    spec: JSON,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owner: JSON | None = None,
) -> JSON:
    """A Backup body. Only Safehold's own labels are ever set on generated Backups: never a
    parent's labels or annotations, so Argo CD tracking (argocd.argoproj.io/*,
    app.kubernetes.io/instance) is not copied and Argo CD does not prune them."""
    meta: JSON = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": API_VERSION, "kind": BACKUP.kind, "metadata": meta, "spec": spec}


def content_spec(content: BackupContent) -> JSON:
    """The spec of a self-contained Backup taking `content`: everything a run needs is in
    it, so a later edit of the policy it came from never changes it."""
    spec = BackupSpec(
        storage_location=content.storage_location,
        selection=content.selection,
        volumes=content.volumes,
        databases=content.databases,
        hooks=content.hooks,
    )
    return spec.to_wire()


def policy_backup(
    policy: JSON, name: str, annotations: Mapping[str, str], content: BackupContent
) -> JSON:
    """The Backup of one run of a policy, carrying the policy's content at this moment; the
    policy label (and the owner reference) say which policy it belongs to."""
    meta = policy["metadata"]
    owner = {
        "apiVersion": API_VERSION,
        "kind": POLICY.kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    return backup_object(
        name,
        meta["namespace"],
        content_spec(content),
        labels={LABEL_POLICY: meta["name"]},
        annotations=annotations,
        owner=owner,
    )


def policy_drill(policy: JSON, name: str, scheduled: str, spec: BackupPolicySpec) -> JSON:
    """The BackupVerification of one scheduled drill: the policy's drill settings at this
    moment, its newest restorable backup (resolved when the drill starts)."""
    meta = policy["metadata"]
    verification = spec.verification
    settings = (
        DrillSettings.model_validate(verification.model_dump()).to_wire() if verification else {}
    )
    return {
        "apiVersion": API_VERSION,
        "kind": VERIFICATION.kind,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {LABEL_POLICY: meta["name"]},
            "annotations": {ANNOTATION_SCHEDULED_TIME: scheduled},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": POLICY.kind,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {**settings, "policyRef": {"name": meta["name"]}},
    }


# ---------------------------------------------------------------------- mover Jobs
def mover_image() -> str:
    return os.environ.get("SAFEHOLD_MOVER_IMAGE", "safehold:dev")


def mover_service_account() -> str | None:
    """The ServiceAccount mover pods run as (the Helm chart sets it), or None for `default`."""
    return os.environ.get("SAFEHOLD_MOVER_SERVICE_ACCOUNT") or None


@dataclass(frozen=True)
class VolumeMount:
    name: str
    claim: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class MoverPod:
    """Where, as whom and for how long a mover pod runs, and what it mounts."""

    volumes: Sequence[VolumeMount] = ()
    node: str | None = None
    run_as_user: int = DEFAULT_MOVER_UID
    run_as_group: int = DEFAULT_MOVER_UID
    fs_group: int | None = None
    resources: ResourceRequirements | None = None
    deadline_seconds: int = 6 * 3600
    capabilities: Sequence[str] = ()
    """Added after dropping all; only for the root mover (run_as_user 0)."""


@dataclass(frozen=True)
class MoverSpec:
    name: str
    namespace: str
    verb: str
    env: Mapping[str, str]
    secret_name: str
    secret_keys: Sequence[str]
    pod: MoverPod = field(default_factory=MoverPod)
    labels: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: int = 600
    file_keys: Sequence[str] = ()  # keys of the Secret mounted as FILES_DIR/<key>, not env
    service_account: str | None = field(default_factory=mover_service_account)
    image: str = field(default_factory=mover_image)

    @property
    def all_labels(self) -> dict[str, str]:
        return {LABEL_COMPONENT: "mover", **self.labels}


def build_service_account(name: str, namespace: str, labels: Mapping[str, str]) -> JSON:
    """The movers' ServiceAccount: no token mounted, nothing bound to it."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "automountServiceAccountToken": False,
    }


def build_secret(
    name: str, namespace: str, data: Mapping[str, str], labels: Mapping[str, str]
) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "type": "Opaque",
        "stringData": dict(data),
    }


def _mover_env(spec: MoverSpec) -> list[JSON]:
    env: list[JSON] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": spec.secret_name, "key": k}}}
        for k in spec.secret_keys
    ]
    return [
        *env,
        {"name": "HOME", "value": SCRATCH},
        # Named explicitly so the mover and Kubernetes agree on where the result goes.
        {"name": TERMINATION_LOG_ENV, "value": DEFAULT_TERMINATION_LOG},
        {"name": "RESTIC_CACHE_DIR", "value": f"{SCRATCH}/cache"},
    ]


def _secret_files(spec: MoverSpec, name: str, keys: Sequence[str], path: str) -> tuple[JSON, JSON]:
    volume = {
        "name": name,
        "secret": {"secretName": spec.secret_name, "items": [{"key": k, "path": k} for k in keys]},
    }
    return volume, {"name": name, "mountPath": path, "readOnly": True}


def _mover_volumes(spec: MoverSpec) -> tuple[list[JSON], list[JSON]]:
    volumes: list[JSON] = [{"name": "scratch", "emptyDir": {}}]
    mounts: list[JSON] = [{"name": "scratch", "mountPath": SCRATCH}]
    for vol in spec.pod.volumes:
        claim = {"claimName": vol.claim, "readOnly": vol.read_only}
        volumes.append({"name": vol.name, "persistentVolumeClaim": claim})
        mounts.append({"name": vol.name, "mountPath": vol.path, "readOnly": vol.read_only})
    if spec.file_keys:
        volume, mount = _secret_files(spec, "files", list(spec.file_keys), FILES_DIR)
        volumes.append(volume)
        mounts.append(mount)
    return volumes, mounts


def _node_affinity(node: str) -> JSON:
    term = {
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    }
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _mover_pod(spec: MoverSpec) -> JSON:
    volumes, mounts = _mover_volumes(spec)
    non_root = spec.pod.run_as_user != 0
    capabilities: JSON = {"drop": ["ALL"]}
    if spec.pod.capabilities:
        capabilities["add"] = list(spec.pod.capabilities)
    pod_security: JSON = {
        "runAsNonRoot": non_root,
        "runAsUser": spec.pod.run_as_user,
        "runAsGroup": spec.pod.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.pod.fs_group is not None:
        pod_security["fsGroup"] = spec.pod.fs_group
    container: JSON = {
        "name": "mover",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["safehold", "mover", spec.verb],
        "env": _mover_env(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": non_root,
            "capabilities": capabilities,
        },
    }
    if spec.pod.resources is not None:
        container["resources"] = spec.pod.resources.to_wire()
    pod: JSON = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.pod.node:
        pod["affinity"] = _node_affinity(spec.pod.node)
    return pod


def build_job(spec: MoverSpec) -> JSON:
    """The mover Job: one pod, never retried (the operator decides what a failure means)."""
    labels = spec.all_labels
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.pod.deadline_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": _mover_pod(spec)},
        },
    }


# ---------------------------------------------------------------------- volumes, namespaces
def pvc_body(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    *,
    access_modes: Sequence[str],
    size: str,
    storage_class: str | None = None,
    snapshot: str | None = None,
) -> JSON:
    """A PVC, optionally provisioned from a VolumeSnapshot."""
    spec: JSON = {
        "accessModes": list(access_modes) or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if snapshot is not None:
        spec["dataSource"] = {
            "apiGroup": SNAPSHOT_GROUP,
            "kind": "VolumeSnapshot",
            "name": snapshot,
        }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def volume_snapshot_body(
    namespace: str, name: str, pvc: str, labels: Mapping[str, str], snapshot_class: str | None
) -> JSON:
    """A CSI VolumeSnapshot of one PVC."""
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": pvc}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    return {
        "apiVersion": f"{SNAPSHOT_GROUP}/{SNAPSHOT_VERSION}",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def namespace_body(name: str, labels: Mapping[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels)},
    }
