"""Mover Jobs, run: create the Secret and the Job (bodies from planning/builders.py), wait
until the Job ends, read the mover's result back."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from safehold.api.base import JSON
from safehold.api.errors import Failure
from safehold.api.labels import FIELD_MANAGER, LABEL_COMPONENT
from safehold.contract.result import parse_result
from safehold.kube.rest import ApiError, Rest
from safehold.planning.builders import MoverSpec, build_job, build_secret, build_service_account
from safehold.planning.resource_types import resource_path

log = logging.getLogger(__name__)
PROGRESS_POLL = 3.0  # seconds between reads of a running mover's progress
# Waiting reasons of a pod that will not start without someone changing something.
STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "Unschedulable",
    }
)


def stuck_limit() -> float:
    """How long a mover pod may wait for such a reason before its Job is given up."""
    return float(os.environ.get("SAFEHOLD_MOVER_START_TIMEOUT_SECONDS") or 300)


class MoverStartFailed(Failure):
    """A mover Job could not be started."""


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


def _remove_old_job(rest: Rest, spec: MoverSpec, timeout: float = 120) -> None:
    """Delete a Job of the same name left by an earlier attempt (an operator restart) and wait
    until it and its pods are gone: its Secret is owned by it, so the garbage collector would
    otherwise delete the new attempt's Secret under the new Job."""
    path = _job_path(spec.namespace, spec.name)
    rest.delete_quietly(path, propagation="Foreground")
    deadline = time.monotonic() + timeout
    while rest.get_or_none(path) is not None:
        if time.monotonic() > deadline:
            raise MoverStartFailed(
                "MoverJobNotRemoved",
                f"Job {spec.namespace}/{spec.name} of an earlier attempt is still being deleted",
            )
        time.sleep(0.5)


def start_mover(rest: Rest, spec: MoverSpec, secret_data: Mapping[str, str]) -> None:
    """Create the ServiceAccount (if named), the Secret and the Job.

    The Secret is owned by the Job, so the garbage collector removes both once the Job's TTL
    has passed; the result is read before that.
    """
    if spec.service_account:
        rest.apply(
            resource_path("", "v1", "serviceaccounts", spec.namespace, spec.service_account),
            build_service_account(spec.service_account, spec.namespace, {LABEL_COMPONENT: "mover"}),
            field_manager=FIELD_MANAGER,
            force=True,
        )
    _remove_old_job(rest, spec)
    rest.apply(
        _secret_path(spec.namespace, spec.secret_name),
        build_secret(spec.secret_name, spec.namespace, secret_data, spec.all_labels),
        field_manager=FIELD_MANAGER,
        force=True,
    )
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


def stuck_reason(rest: Rest, namespace: str, job: str) -> str | None:
    """Why the Job's pod cannot start (a waiting reason that needs a change), if it cannot."""
    pods = rest.get(
        resource_path("", "v1", "pods", namespace),
        labelSelector=f"batch.kubernetes.io/job-name={job}",
    ).get("items", [])
    for pod in pods:
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return f"pod {pod['metadata']['name']} is Unschedulable: {cond.get('message', '')}"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                name = pod["metadata"]["name"]
                return f"pod {name} waits: {waiting['reason']}: {waiting.get('message', '')}"
    return None


def wait_mover(
    rest: Rest,
    spec: MoverSpec,
    poll: float = 1.0,
    on_progress: ProgressFn | None = None,
    stuck_after: float | None = None,
) -> MoverOutcome:
    """Wait until the mover's Job ends; its outcome (and the mover's result document). A pod
    that cannot start (its Secret gone, its image missing, no node for it) for `stuck_after`
    seconds ends the Job with MoverCannotStart, so nothing waits for the Job's deadline."""
    deadline = time.monotonic() + spec.pod.deadline_seconds + 120
    limit = stuck_limit() if stuck_after is None else stuck_after
    stuck_since: float | None = None
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
        if time.monotonic() >= next_progress:  # the pod, every few seconds
            next_progress = time.monotonic() + PROGRESS_POLL
            why = stuck_reason(rest, spec.namespace, spec.name)
            stuck_since = (stuck_since or time.monotonic()) if why else None
            if why and stuck_since is not None and time.monotonic() - stuck_since >= limit:
                path = _job_path(spec.namespace, spec.name)
                rest.delete_quietly(path, propagation="Foreground")
                message = f"Job {spec.namespace}/{spec.name}: {why}"
                return MoverOutcome(False, "MoverCannotStart", message)
            progress = latest_progress(rest, spec.namespace, spec.name) if on_progress else None
            if on_progress is not None and progress is not None:
                on_progress(progress)
        time.sleep(poll)
    return MoverOutcome(
        False, "MoverTimeout", f"Job {spec.namespace}/{spec.name} did not finish in time"
    )


def run_mover(
    rest: Rest,
    spec: MoverSpec,
    secret_data: Mapping[str, str],
    poll: float = 1.0,
    on_progress: ProgressFn | None = None,
) -> MoverOutcome:
    """Start the mover Job and wait until it ends; return the mover's result."""
    start_mover(rest, spec, secret_data)
    return wait_mover(rest, spec, poll, on_progress)


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
