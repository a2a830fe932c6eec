"""Which cluster-scoped objects the exported namespaced objects depend on (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from safehold.api.base import JSON
from safehold.planning.resource_types import ResourceType


@dataclass
class Dependencies:
    """Collected while exporting namespaced objects; consulted for cluster-scoped ones."""

    namespaces: set[str] = field(default_factory=set)
    custom_types: set[tuple[str, str]] = field(default_factory=set)  # (group, plural)
    cluster_roles: set[str] = field(default_factory=set)
    storage_classes: set[str] = field(default_factory=set)
    priority_classes: set[str] = field(default_factory=set)
    object_refs: set[tuple[str, str]] = field(default_factory=set)
    """(kind, name) of every object a custom resource's spec names, e.g. an issuerRef."""

    def observe(self, group: str, plural: str, custom: bool, obj: JSON) -> None:
        """Record what one exported namespaced object refers to."""
        if custom:
            self.custom_types.add((group, plural))
            self.object_refs |= object_references(obj.get("spec"))
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind == "RoleBinding" and (obj.get("roleRef") or {}).get("kind") == "ClusterRole":
            self.cluster_roles.add(obj["roleRef"]["name"])
        elif kind == "PersistentVolumeClaim" and spec.get("storageClassName"):
            self.storage_classes.add(spec["storageClassName"])
        pod_spec = _pod_spec(obj)
        if pod_spec and pod_spec.get("priorityClassName"):
            self.priority_classes.add(pod_spec["priorityClassName"])

    def takes_cluster_custom(self, group: str, plural: str, kind: str, name: str) -> bool:
        """Whether a cluster-scoped custom resource is named by an exported object; its CRD
        then belongs in the backup too."""
        if (kind, name) not in self.object_refs:
            return False
        self.custom_types.add((group, plural))
        return True

    def wanted(self, resource: str, obj: JSON) -> bool:
        """Whether a cluster-scoped object belongs in the backup."""
        name = obj["metadata"]["name"]
        if resource == "namespaces":
            return name in self.namespaces
        if resource == "customresourcedefinitions.apiextensions.k8s.io":
            spec = obj.get("spec") or {}
            return (spec.get("group"), (spec.get("names") or {}).get("plural")) in self.custom_types
        if resource == "clusterrolebindings.rbac.authorization.k8s.io":
            binds_here = any(
                s.get("kind") == "ServiceAccount" and s.get("namespace") in self.namespaces
                for s in obj.get("subjects") or []
            )
            if binds_here and (obj.get("roleRef") or {}).get("kind") == "ClusterRole":
                self.cluster_roles.add(obj["roleRef"]["name"])
            return binds_here
        if resource == "clusterroles.rbac.authorization.k8s.io":
            return name in self.cluster_roles
        if resource == "storageclasses.storage.k8s.io":
            return name in self.storage_classes
        if resource == "priorityclasses.scheduling.k8s.io":
            return name in self.priority_classes
        return False


def left_out(deps: Dependencies, cluster_custom: Sequence[ResourceType]) -> list[str]:
    """Warnings for cluster-scoped custom resources the exported objects name, in a backup
    that takes no cluster resources: the restored application may need them."""
    kinds = {rt.kind for rt in cluster_custom}
    named = sorted(f"{kind}/{name}" for kind, name in deps.object_refs if kind in kinds)
    if not named:
        return []
    shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    return [
        f"not taken: cluster-scoped {shown}, named by the backed-up objects; a backup in the "
        "operator's namespace with selection.includeClusterResources takes them"
    ]


MAX_REFERENCES = 256  # per object: a spec is untrusted in size and shape
_MAX_DEPTH = 8


def object_references(spec: object) -> set[tuple[str, str]]:
    """(kind, name) of every `{kind: ..., name: ...}` mapping in `spec` (the shape of
    Kubernetes object references such as cert-manager's issuerRef), bounded."""
    found: set[tuple[str, str]] = set()

    def walk(value: object, depth: int) -> None:
        if depth > _MAX_DEPTH or len(found) >= MAX_REFERENCES:
            return
        if isinstance(value, dict):
            kind, name = value.get("kind"), value.get("name")
            if isinstance(kind, str) and isinstance(name, str) and kind and name:
                found.add((kind, name))
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, list):
            for item in value[:MAX_REFERENCES]:
                walk(item, depth + 1)

    walk(spec, 0)
    return found


def _pod_spec(obj: JSON) -> JSON | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    result: JSON | None = template.get("spec")
    return result


# Cluster-scoped types whose selection depends on others: bindings before roles.
CLUSTER_EXPORT_ORDER = (
    "namespaces",
    "customresourcedefinitions.apiextensions.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "storageclasses.storage.k8s.io",
    "priorityclasses.scheduling.k8s.io",
)
