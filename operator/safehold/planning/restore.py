"""Pure restore planning: which objects, in which order, cleaned how, mapped where."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from safehold.api.base import LabelSelector
from safehold.planning.selection import labels_match

JSON = dict[str, Any]

# Lower runs first. CRDs and namespaces, then cluster-scoped configuration, then what
# workloads consume, then workloads, then everything else (custom resources included).
_PRIORITY: dict[str, int] = {
    "customresourcedefinitions.apiextensions.k8s.io": 0,
    "namespaces": 1,
    "storageclasses.storage.k8s.io": 2,
    "priorityclasses.scheduling.k8s.io": 2,
    "clusterroles.rbac.authorization.k8s.io": 2,
    "clusterrolebindings.rbac.authorization.k8s.io": 3,
    "serviceaccounts": 4,
    "secrets": 4,
    "configmaps": 4,
    "limitranges": 4,
    "resourcequotas": 4,
    "roles.rbac.authorization.k8s.io": 4,
    "rolebindings.rbac.authorization.k8s.io": 5,
    "persistentvolumeclaims": 5,
    "services": 6,
    "deployments.apps": 7,
    "statefulsets.apps": 7,
    "daemonsets.apps": 7,
    "replicasets.apps": 7,
    "jobs.batch": 7,
    "cronjobs.batch": 7,
    "pods": 7,
}
REST_PRIORITY = 8
CRD_RESOURCE = "customresourcedefinitions.apiextensions.k8s.io"

_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
)
_SERVER_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
)
_JOB_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")


def priority(resource: str) -> int:
    return _PRIORITY.get(resource, REST_PRIORITY)


@dataclass(frozen=True)
class Entry:
    """One object of the backup's index."""

    path: str
    resource: str
    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def from_index(cls, item: JSON) -> Entry:
        return cls(
            path=item["path"],
            resource=item["resource"],
            api_version=item["apiVersion"],
            kind=item["kind"],
            namespace=item.get("namespace"),
            name=item["name"],
        )

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def plural(self) -> str:
        return self.resource.split(".", 1)[0]

    def label(self, namespace: str | None = None) -> str:
        ns = namespace if namespace is not None else self.namespace
        return f"{self.resource} {ns + '/' if ns else ''}{self.name}"


def _type_matches(entry: Entry, pattern: str) -> bool:
    p = pattern.lower()
    if p == "*":
        return True
    head, _, group = p.partition(".")
    if head not in (entry.plural.lower(), entry.kind.lower()):
        return False
    return not group or group == entry.group.lower()


@dataclass(frozen=True)
class Filters:
    namespaces: Sequence[str] | None
    included: Sequence[str]
    excluded: Sequence[str]
    selector: LabelSelector | None

    def wants_entry(self, entry: Entry) -> bool:
        if entry.namespace is None:
            # Namespace objects follow the namespace filter; other cluster-scoped ones go
            # with any namespaced selection.
            if entry.resource == "namespaces" and self.namespaces:
                return entry.name in self.namespaces
        elif self.namespaces and entry.namespace not in self.namespaces:
            return False
        if not any(_type_matches(entry, p) for p in self.included):
            return False
        return not any(_type_matches(entry, p) for p in self.excluded)

    def wants_object(self, obj: JSON) -> bool:
        return labels_match((obj.get("metadata") or {}).get("labels") or {}, self.selector)


def skip_reason(entry: Entry, obj: JSON) -> str | None:
    """Why an object is never restored (its controller or the cluster recreates it)."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"managed by its controller {ref.get('kind')}/{ref.get('name')}"
    if entry.resource == "secrets" and obj.get("type") == "kubernetes.io/service-account-token":
        return "service account token Secret; the cluster issues new tokens"
    if entry.resource == "configmaps" and entry.name == "kube-root-ca.crt":
        return "published by the cluster in every namespace"
    if entry.resource == "namespaces" and entry.name in ("default", "kube-system", "kube-public"):
        return "system namespace"
    return None


def map_namespace(namespace: str | None, mapping: Mapping[str, str]) -> str | None:
    if namespace is None:
        return None
    return mapping.get(namespace, namespace)


def clean(entry: Entry, obj: JSON, mapping: Mapping[str, str], labels: Mapping[str, str]) -> JSON:
    """A copy of `obj` a different cluster accepts: server-set fields removed, namespace
    mapped, restore labels added."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in _SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    if entry.namespace is not None:
        meta["namespace"] = map_namespace(entry.namespace, mapping)
    elif entry.resource == "namespaces":
        meta["name"] = mapping.get(entry.name, entry.name)
        out.pop("spec", None)  # finalizers are the namespace controller's
    spec = out.get("spec") or {}
    if entry.resource == "services":
        if spec.get("clusterIP") not in ("None", None):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        spec.pop("healthCheckNodePort", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    elif entry.resource == "persistentvolumeclaims":
        spec.pop("volumeName", None)
    elif entry.resource == "pods":
        spec.pop("nodeName", None)
    elif entry.resource == "jobs.batch":
        spec.pop("selector", None)
        for where in (meta, (spec.get("template") or {}).get("metadata") or {}):
            for key in _JOB_LABELS:
                (where.get("labels") or {}).pop(key, None)
    elif entry.resource == "serviceaccounts":
        out.pop("secrets", None)  # token Secrets are issued anew
    if entry.resource in (
        "rolebindings.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
    ):
        for subject in out.get("subjects") or []:
            if subject.get("namespace"):
                subject["namespace"] = map_namespace(subject["namespace"], mapping)
    return out


def owner_references(obj: JSON) -> list[JSON]:
    """Non-controller owner references worth re-pointing after restore."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [r for r in refs if not r.get("controller")]


def diff_paths(desired: JSON, existing: JSON, depth: int = 3) -> list[str]:
    """Dotted paths (to `depth`) where `desired` sets a value `existing` lacks or differs in;
    fields only the server sets are not compared."""
    changes: list[str] = []

    def walk(a: Any, b: Any, path: str, level: int) -> None:
        if isinstance(a, dict) and isinstance(b, dict) and level < depth:
            for key in sorted(a):
                if key in ("status",) and not path:
                    continue
                walk(a[key], b.get(key), f"{path}.{key}" if path else key, level + 1)
        elif a != b:
            changes.append(path)

    walk(desired, existing, "", 0)
    return changes


def sort_entries(entries: Sequence[Entry]) -> list[Entry]:
    return sorted(
        entries, key=lambda e: (priority(e.resource), e.resource, e.namespace or "", e.name)
    )
