"""The checks of a drill that look at what was restored: the objects against the backup's
checksums, the workloads becoming Ready, and the user's probe Jobs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from safehold.api.backup import VolumeResult
from safehold.api.base import JSON
from safehold.api.labels import LABEL_INTERNAL
from safehold.api.verification import CheckStatus, ProbeJob
from safehold.engine.restore_apply import read_confined
from safehold.kube.rest import ApiError, Rest
from safehold.planning import trust
from safehold.planning.resource_types import resource_path
from safehold.planning.restore import Entry
from safehold.storage.catalog import BackupManifest

POLL_SECONDS = 2.0


def timed(name: str, work: Callable[[], tuple[bool, str, str]]) -> CheckStatus:
    """Run one check; `work` returns (passed, reason, message)."""
    started = time.monotonic()
    passed, reason, message = work()
    return CheckStatus(
        name=name,
        result="Passed" if passed else "Failed",
        reason=None if passed else reason,
        message=message,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def skipped(name: str, reason: str, message: str) -> CheckStatus:
    return CheckStatus(name=name, result="Skipped", reason=reason, message=message)


def content(
    manifest: BackupManifest, entries: Sequence[Entry], workdir: Path, volumes: list[VolumeResult]
) -> tuple[bool, str, str]:
    """The export's index against the manifest's checksum, every object file against the
    index's checksum, and the volume restores' own verification (restic --verify)."""
    export, resources = manifest.export, manifest.resources
    if export is None or resources is None:
        return False, "ObjectMissing", "the manifest records no export"
    index = read_confined(workdir, export.index_path, trust.MAX_INDEX_BYTES)
    if resources.sha256 and hashlib.sha256(index).hexdigest() != resources.sha256:
        return (
            False,
            "IndexChecksumMismatch",
            "the export's index does not match the checksum in the backup's manifest",
        )
    bad: list[str] = []
    for entry in entries:
        try:
            data = read_confined(workdir, entry.path, trust.MAX_OBJECT_BYTES)
        except trust.Untrusted as err:
            return False, "ObjectMissing", f"{entry.label()}: {err.message}"
        if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
            bad.append(entry.label())
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return False, "ChecksumMismatch", f"{len(bad)} object(s) differ from the index: {shown}"
    failed = [v for v in volumes if v.result != "Succeeded"]
    if failed:
        first = failed[0]
        return (
            False,
            "FileContentMismatch",
            f"PVC {first.pvc}: restored files not verified: {first.message}",
        )
    files = sum(v.files or 0 for v in volumes)
    return (
        True,
        "",
        f"{len(entries)} object(s) match their checksums; {len(volumes)} PVC(s), "
        f"{files} file(s) read back and compared with the snapshot",
    )


WORKLOAD_KINDS = (("apps", "deployments", "Deployment"), ("apps", "statefulsets", "StatefulSet"))


def _not_ready(body: JSON) -> str | None:
    spec, status = body.get("spec") or {}, body.get("status") or {}
    wanted = spec.get("replicas", 1)
    ready = status.get("readyReplicas") or 0
    generation_seen = status.get("observedGeneration", 0) >= body["metadata"].get("generation", 0)
    if ready >= wanted and generation_seen:
        return None
    return f"{ready}/{wanted} ready"


def workloads_pending(rest: Rest, namespaces: Sequence[str]) -> tuple[int, list[str]]:
    """How many Deployments and StatefulSets there are, and those not Ready yet."""
    total, pending = 0, []
    for ns in namespaces:
        for group, plural, kind in WORKLOAD_KINDS:
            for page in rest.list_pages(resource_path(group, "v1", plural, ns)):
                for body in page:
                    total += 1
                    why = _not_ready(body)
                    if why is not None:
                        pending.append(f"{kind} {ns}/{body['metadata']['name']}: {why}")
    return total, pending


def workloads(rest: Rest, namespaces: Sequence[str], timeout: float) -> tuple[bool, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        total, pending = workloads_pending(rest, namespaces)
        if not pending:
            return True, "", f"{total} Deployment(s) and StatefulSet(s) Ready"
        if time.monotonic() >= deadline:
            shown = "; ".join(pending[:5])
            return (
                False,
                "WorkloadsNotReady",
                f"{len(pending)} of {total} not Ready after {timeout:.0f}s: {shown}",
            )
        time.sleep(POLL_SECONDS)


def probe_job(probe: ProbeJob, namespace: str, drill: str) -> JSON:
    """The user's probe as a Job that passes the restricted Pod Security profile."""
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"probe-{probe.name}",
            "namespace": namespace,
            "labels": {LABEL_INTERNAL: "true", "safehold.io/probe": probe.name},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": probe.timeout_seconds,
            "template": {
                "metadata": {"labels": {LABEL_INTERNAL: "true", "safehold.io/probe": probe.name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "probe",
                            "image": probe.image,
                            "command": list(probe.command),
                            "securityContext": security,
                        }
                    ],
                },
            },
        },
    }


def _job_end(body: JSON) -> tuple[bool, str] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return True, "exited 0"
        if cond.get("type") == "Failed":
            return False, f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip()
    return None


def probe(rest: Rest, probe: ProbeJob, namespace: str, drill: str) -> tuple[bool, str, str]:
    """Run one probe Job in the scratch namespace to its end."""
    path = resource_path("batch", "v1", "jobs", namespace)
    try:
        rest.create(path, probe_job(probe, namespace, drill))
    except ApiError as err:
        return False, "ProbeNotStarted", f"Job probe-{probe.name}: {err.message}"
    deadline = time.monotonic() + probe.timeout_seconds + 60
    job_path = resource_path("batch", "v1", "jobs", namespace, f"probe-{probe.name}")
    while time.monotonic() < deadline:
        end = _job_end(rest.get_or_none(job_path) or {})
        if end is not None:
            passed, text = end
            return passed, "ProbeFailed", f"{probe.image} {' '.join(probe.command)}: {text}"
        time.sleep(POLL_SECONDS)
    return False, "ProbeTimedOut", f"probe {probe.name} did not finish"
