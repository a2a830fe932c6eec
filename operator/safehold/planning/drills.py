"""Pure planning of a restore drill: the scratch namespaces and their bodies, what a drill
restores and how objects are made harmless there, and the verdict from the checks."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from safehold.api.backup import VolumeResult
from safehold.api.base import JSON
from safehold.api.labels import LABEL_INTERNAL, LABEL_POD_SECURITY_ENFORCE
from safehold.api.verification import BackupVerificationResult, CheckStatus
from safehold.planning.names import label_value
from safehold.planning.restore import Entry

# On a scratch namespace: the drill it belongs to (namespace.name as a label value) and its
# UID (the only proof that removing it is ours to do).
LABEL_DRILL = "safehold.io/verification"
ANNOTATION_DRILL_UID = "safehold.io/verification-uid"
ANNOTATION_DRILL_SOURCE = "safehold.io/verification-source"
SCRATCH_PREFIX = "shv-"
ISOLATION_POLICY = "safehold-drill-isolation"

# Kinds a drill never restores: access rights (a restored binding could give someone rights
# in the scratch namespace), traffic rules (the isolation policy must hold alone), ways in from
# outside, and one-shot Jobs (they would run again).
DRILL_EXCLUDED = frozenset(
    {
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "networkpolicies.networking.k8s.io",
        "ingresses.networking.k8s.io",
        "jobs.batch",
    }
)
# API groups a drill never restores: Gateway API routes (ways in), and Safehold's own kinds (a
# restored BackupPolicy or location would run backups from the scratch namespace).
DRILL_EXCLUDED_GROUPS = frozenset({"gateway.networking.k8s.io", "safehold.io"})
# Metadata that ties an object to a GitOps controller: stripped so Argo CD never adopts,
# prunes or shows the copies.
_TRACKING_PREFIXES = ("argocd.argoproj.io/", "argoproj.io/")
_TRACKING_LABELS = ("app.kubernetes.io/instance",)


def scratch_namespace(namespace: str, drill: str, uid: str, source: str) -> str:
    """The generated scratch namespace of one source namespace of a drill: short, unique per
    drill run and source, recognisable by its prefix."""
    digest = hashlib.sha256(f"{namespace}/{drill}/{uid}/{source}".encode()).hexdigest()[:12]
    stem = source[: 63 - len(SCRATCH_PREFIX) - 13].rstrip("-")
    return f"{SCRATCH_PREFIX}{stem}-{digest}"


def drill_label(namespace: str, drill: str) -> str:
    return label_value(f"{namespace}.{drill}")


def scratch_namespace_body(name: str, namespace: str, drill: str, uid: str, source: str) -> JSON:
    """Owned by the operator, labelled as Safehold's machinery (never backed up), restricted
    Pod Security enforced."""
    levels = {
        LABEL_POD_SECURITY_ENFORCE: "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                LABEL_INTERNAL: "true",
                LABEL_DRILL: drill_label(namespace, drill),
                **levels,
            },
            "annotations": {
                ANNOTATION_DRILL_UID: uid,
                ANNOTATION_DRILL_SOURCE: f"{namespace}/{source}",
            },
        },
    }


def isolation_policy(namespace: str) -> JSON:
    """Nothing crosses the scratch namespace's boundary (where the network enforces it):
    its pods reach each other (a probe reaches the restored Services by name) and the
    cluster's DNS, nothing else, and nothing reaches them from outside."""
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    system = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": ISOLATION_POLICY,
            "namespace": namespace,
            "labels": {LABEL_INTERNAL: "true"},
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": [{"to": [{"podSelector": {}}]}, {"to": [system], "ports": dns_ports}],
        },
    }


def drill_entries(entries: Iterable[Entry]) -> list[Entry]:
    """What a drill restores of a backup's index: namespaced objects only (the scratch
    namespaces stand in for the Namespace objects; cluster-scoped objects are shared), none
    of the excluded kinds."""
    return [
        e
        for e in entries
        if e.namespace is not None
        and e.resource not in DRILL_EXCLUDED
        and e.group not in DRILL_EXCLUDED_GROUPS
    ]


def drill_volumes(volumes: Sequence[VolumeResult]) -> tuple[list[VolumeResult], list[str]]:
    """The PVCs a drill restores, and those it cannot: snapshot-mode data lives in
    VolumeSnapshots of its own namespace, which a scratch namespace cannot use."""
    restored = [v for v in volumes if v.mode != "snapshot"]
    left = [f"{v.namespace}/{v.pvc}" for v in volumes if v.mode == "snapshot"]
    return restored, left


# Volume restore reasons that prove the stored data damaged (the rest say the drill could
# not restore it here: the root mover, a quota).
VOLUME_DAMAGE = ("FileContentMismatch", "RepositoryDamaged", "SnapshotNotFound")


def volume_reason(message: str | None) -> str:
    """The reason a failed volume restore's message starts with ("Reason: text")."""
    head = (message or "").split(":", 1)[0].strip()
    return head if head.isidentifier() else "RestoreFailed"


def harmless(entry: Entry, obj: JSON) -> JSON:
    """A copy of a cleaned object fit for the scratch namespace: no GitOps tracking, Services
    only reachable inside the cluster, CronJobs suspended."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        kept = {
            k: v
            for k, v in values.items()
            if not k.startswith(_TRACKING_PREFIXES)
            and not (field == "labels" and k in _TRACKING_LABELS)
        }
        if kept or field == "labels":
            meta[field] = kept
        else:
            meta.pop(field, None)
    spec = out.get("spec")
    if entry.resource == "services" and isinstance(spec, dict):
        if spec.get("type") in ("LoadBalancer", "NodePort", "ExternalName"):
            spec["type"] = "ClusterIP"
        for key in ("externalIPs", "loadBalancerIP", "loadBalancerSourceRanges", "externalName"):
            spec.pop(key, None)
        for key in ("externalTrafficPolicy", "allocateLoadBalancerNodePorts"):
            spec.pop(key, None)
        spec.pop("loadBalancerClass", None)
    if entry.resource == "cronjobs.batch" and isinstance(spec, dict):
        spec["suspend"] = True
    return out


def data_subset(previous: str | None, read_data_runs: int) -> tuple[int, int]:
    """The pack-file subset k/N this drill reads: the one after the previous drill's (`k/N`
    as recorded), so that N successive drills read everything; 1/1 reads all data."""
    if read_data_runs <= 1:
        return (1, 1)
    last = 0
    if previous:
        k, _, n = previous.partition("/")
        if k.isdigit() and n == str(read_data_runs):
            last = int(k)
    return (last % read_data_runs + 1, read_data_runs)


def touches(damaged: Iterable[str], snapshots: Iterable[str]) -> bool:
    """Whether any damaged snapshot (full or short id) is one of `snapshots`; an unknown set
    of damaged snapshots (empty) counts as touching them all."""
    found = [d for d in damaged if d]
    if not found:
        return True
    return any(s.startswith(d) or d.startswith(s) for d in found for s in snapshots if s)


def scratch_suffix(uid: str) -> str:
    """What a drill appends to the names of its scratch databases."""
    return "shv" + hashlib.sha256(uid.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    message: str
    backup_result: BackupVerificationResult


# Checks whose failure proves the backup's stored data damaged (not the cluster's fault).
_DAMAGE_REASONS = frozenset(
    {
        "RepositoryDamaged",
        "ChecksumMismatch",
        "ObjectMissing",
        "IndexChecksumMismatch",
        "ManifestMissing",
        "SnapshotMissing",
        "FileContentMismatch",
    }
)


def verdict(checks: Sequence[CheckStatus]) -> Verdict:
    """Passed when no check failed; otherwise named by the first failed check. The Backup is
    Corrupt when a failure proves its stored data damaged."""
    failed = [c for c in checks if c.result == "Failed"]
    if not failed:
        ran = [c.name for c in checks if c.result == "Passed"]
        message = f"{len(ran)} check(s) passed: {', '.join(ran)}"
        return Verdict(True, "Verified", message, "Verified")
    first = failed[0]
    names = ", ".join(c.name for c in failed)
    message = f"check {first.name} failed: {first.message}"
    if len(failed) > 1:
        message += f" (failed checks: {names})"
    damaged = any(c.reason in _DAMAGE_REASONS for c in failed)
    result: BackupVerificationResult = "Corrupt" if damaged else "VerificationFailed"
    return Verdict(False, first.reason or "CheckFailed", message, result)


def backup_age_seconds(completed: datetime | None, now: datetime) -> float | None:
    return max((now - completed).total_seconds(), 0.0) if completed else None


def human_duration(seconds: float | None) -> str | None:
    """1m20s-style, for the RTO column."""
    if seconds is None:
        return None
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{secs}s"
