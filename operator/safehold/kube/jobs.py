"""Mover Jobs: pure builders for the Job and its Secret, and a runner that waits for the result.

Every mover pod runs under the restricted Pod Security profile: non-root numeric UID, no
privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root
filesystem (an emptyDir holds /tmp and restic's cache), no service-account token. Secrets
reach it only as Secret-backed environment variables or as files of its own Secret (a CA).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safehold.api.base import ResourceRequirements
from safehold.kube.rest import ApiError, Rest, resource_path
from safehold.movers.env import DEFAULT_TERMINATION_LOG
from safehold.movers.env import TERMINATION_LOG as TERMINATION_LOG_ENV
from safehold.movers.result import parse_result

JSON = dict[str, Any]
log = logging.getLogger(__name__)
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_BACKUP = "safehold.io/backup"
CA_DIR = "/etc/safehold/ca"
FILES_DIR = "/etc/safehold/files"  # Secret keys a mover reads as files (MoverSpec.file_keys)
PROGRESS_POLL = 3.0  # seconds between reads of a running mover's progress
SCRATCH = "/tmp"


def mover_image() -> str:
    return os.environ.get("SAFEHOLD_MOVER_IMAGE", "safehold:dev")


def mover_service_account() -> str | None:
    """The ServiceAccount mover pods run as (the Helm chart sets it), or None for `default`."""
    return os.environ.get("SAFEHOLD_MOVER_SERVICE_ACCOUNT") or None


def build_service_account(name: str, namespace: str, labels: Mapping[str, str]) -> JSON:
    """The movers' ServiceAccount: no token mounted, nothing bound to it."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "automountServiceAccountToken": False,
    }


@dataclass(frozen=True)
class VolumeMount:
    name: str
    claim: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class MoverSpec:
    name: str
    namespace: str
    verb: str
    env: Mapping[str, str]
    secret_name: str
    secret_keys: Sequence[str]
    volumes: Sequence[VolumeMount] = ()
    node: str | None = None
    run_as_user: int = 65532
    run_as_group: int = 65532
    fs_group: int | None = None
    resources: ResourceRequirements | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    deadline_seconds: int = 6 * 3600
    ttl_seconds: int = 600
    has_ca: bool = False
    file_keys: Sequence[str] = ()  # keys of the Secret mounted as FILES_DIR/<key>, not env
    service_account: str | None = field(default_factory=mover_service_account)


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


def build_job(spec: MoverSpec) -> JSON:
    env: list[JSON] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": spec.secret_name, "key": k}}}
        for k in spec.secret_keys
    ]
    env += [
        {"name": "HOME", "value": SCRATCH},
        # Named explicitly so the mover and Kubernetes agree on where the result goes.
        {"name": TERMINATION_LOG_ENV, "value": DEFAULT_TERMINATION_LOG},
        {"name": "RESTIC_CACHE_DIR", "value": f"{SCRATCH}/cache"},
    ]
    volumes: list[JSON] = [{"name": "scratch", "emptyDir": {}}]
    mounts: list[JSON] = [{"name": "scratch", "mountPath": SCRATCH}]
    for vol in spec.volumes:
        volumes.append(
            {
                "name": vol.name,
                "persistentVolumeClaim": {"claimName": vol.claim, "readOnly": vol.read_only},
            }
        )
        mounts.append({"name": vol.name, "mountPath": vol.path, "readOnly": vol.read_only})
    if spec.has_ca:
        volumes.append(
            {
                "name": "ca",
                "secret": {
                    "secretName": spec.secret_name,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        )
        mounts.append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
    if spec.file_keys:
        volumes.append(
            {
                "name": "files",
                "secret": {
                    "secretName": spec.secret_name,
                    "items": [{"key": k, "path": k} for k in spec.file_keys],
                },
            }
        )
        mounts.append({"name": "files", "mountPath": FILES_DIR, "readOnly": True})
    pod_security: JSON = {
        "runAsNonRoot": True,
        "runAsUser": spec.run_as_user,
        "runAsGroup": spec.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.fs_group is not None:
        pod_security["fsGroup"] = spec.fs_group
    container: JSON = {
        "name": "mover",
        "image": mover_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["safehold", "mover", spec.verb],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.resources is not None:
        container["resources"] = spec.resources.to_wire()
    pod: JSON = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node:
        pod["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [spec.node],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    labels = {LABEL_COMPONENT: "mover", **spec.labels}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.deadline_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


@dataclass
class MoverOutcome:
    ok: bool
    reason: str
    message: str
    result: JSON = field(default_factory=dict)


def _job_path(namespace: str, name: str | None = None) -> str:
    return resource_path("batch", "v1", "jobs", namespace, name)


def _secret_path(namespace: str, name: str | None = None) -> str:
    return resource_path("", "v1", "secrets", namespace, name)


def _terminated(rest: Rest, namespace: str, job: str) -> JSON | None:
    pods = rest.get(
        resource_path("", "v1", "pods", namespace),
        labelSelector=f"batch.kubernetes.io/job-name={job}",
    ).get("items", [])
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (status.get("state") or {}).get("terminated")
            if term is not None:
                found: JSON = term
                return found
    return None


def latest_progress(rest: Rest, namespace: str, job: str) -> JSON | None:
    """The newest progress line a running mover printed, read from its pod's log (needs a
    kubelet; None when there is none yet or the log cannot be read)."""
    try:
        pods = rest.get(
            resource_path("", "v1", "pods", namespace),
            labelSelector=f"batch.kubernetes.io/job-name={job}",
        ).get("items", [])
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            return None
        path = resource_path("", "v1", "pods", namespace, running[0]["metadata"]["name"])
        text = rest.get_text(f"{path}/log", tailLines=5)
    except ApiError as err:
        log.debug("no progress from Job %s/%s: %s", namespace, job, err)
        return None
    doc = parse_result("\n".join(line for line in text.splitlines() if '"progress"' in line))
    found: JSON | None = (doc or {}).get("progress")
    return found


ProgressFn = Callable[[JSON], None]


def run_mover(
    rest: Rest,
    spec: MoverSpec,
    secret_data: Mapping[str, str],
    poll: float = 1.0,
    on_progress: ProgressFn | None = None,
) -> MoverOutcome:
    """Create the Secret and the Job, wait until the Job ends, return the mover's result.

    The Secret is owned by the Job, so the garbage collector removes both once the Job's TTL
    has passed; the result is read before that.
    """
    labels = {LABEL_COMPONENT: "mover", **spec.labels}
    if spec.service_account:
        rest.apply(
            resource_path("", "v1", "serviceaccounts", spec.namespace, spec.service_account),
            build_service_account(spec.service_account, spec.namespace, {LABEL_COMPONENT: "mover"}),
            field_manager="safehold",
            force=True,
        )
    rest.apply(
        _secret_path(spec.namespace, spec.secret_name),
        build_secret(spec.secret_name, spec.namespace, secret_data, labels),
        field_manager="safehold",
        force=True,
    )
    try:
        rest.request(
            "DELETE",
            _job_path(spec.namespace, spec.name),
            query={"propagationPolicy": "Background"},
        )
    except ApiError as err:
        if err.status != 404:
            raise
    job = rest.create(_job_path(spec.namespace), build_job(spec))
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": spec.name,
        "uid": job["metadata"]["uid"],
        "blockOwnerDeletion": False,
    }
    rest.merge_patch(
        _secret_path(spec.namespace, spec.secret_name), {"metadata": {"ownerReferences": [owner]}}
    )
    deadline = time.monotonic() + spec.deadline_seconds + 120
    next_progress = time.monotonic()
    while time.monotonic() < deadline:
        current = rest.get_or_none(_job_path(spec.namespace, spec.name))
        if current is None:
            return MoverOutcome(
                False, "MoverJobDeleted", f"Job {spec.namespace}/{spec.name} was deleted"
            )
        conditions = {
            c["type"]: c
            for c in (current.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        if "Complete" in conditions or "Failed" in conditions:
            return _outcome(rest, spec, conditions)
        if on_progress is not None and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_POLL
            progress = latest_progress(rest, spec.namespace, spec.name)
            if progress is not None:
                on_progress(progress)
        time.sleep(poll)
    return MoverOutcome(
        False, "MoverTimeout", f"Job {spec.namespace}/{spec.name} did not finish in time"
    )


def _outcome(rest: Rest, spec: MoverSpec, conditions: Mapping[str, JSON]) -> MoverOutcome:
    term = _terminated(rest, spec.namespace, spec.name) or {}
    message = str(term.get("message") or "")
    result = parse_result(message or "") or {}
    if "Complete" in conditions and result.get("ok"):
        return MoverOutcome(True, "Completed", "", result)
    if result.get("reason"):
        return MoverOutcome(False, str(result["reason"]), str(result.get("message", "")), result)
    failed = conditions.get("Failed") or {}
    why = failed.get("reason") or term.get("reason") or "MoverFailed"
    tail = "\n".join(message.strip().splitlines()[-5:])
    text = (
        f"mover exited with code {term.get('exitCode', '?')}"
        if term
        else str(failed.get("message", ""))
    )
    return MoverOutcome(False, str(why), f"{text}; last output: {tail}" if tail else text, result)
