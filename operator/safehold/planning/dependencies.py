"""Which cluster-scoped objects the exported namespaced objects depend on (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from safehold.api.base import JSON


@dataclass
class Dependencies:
    """Collected while exporting namespaced objects; consulted for cluster-scoped ones."""

    namespaces: set[str] = field(default_factory=set)
    custom_types: set[tuple[str, str]] = field(default_factory=set)  # (group, plural)
    cluster_roles: set[str] = field(default_factory=set)
    storage_classes: set[str] = field(default_factory=set)
    priority_classes: set[str] = field(default_factory=set)

    def observe(self, group: str, plural: str, custom: bool, obj: JSON) -> None:
        """Record what one exported namespaced object refers to."""
        if custom:
            self.custom_types.add((group, plural))
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind == "RoleBinding" and (obj.get("roleRef") or {}).get("kind") == "ClusterRole":
            self.cluster_roles.add(obj["roleRef"]["name"])
        elif kind == "PersistentVolumeClaim" and spec.get("storageClassName"):
            self.storage_classes.add(spec["storageClassName"])
        pod_spec = _pod_spec(obj)
        if pod_spec and pod_spec.get("priorityClassName"):
            self.priority_classes.add(pod_spec["priorityClassName"])

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
