"""Pure selection logic: which resource types and namespaces a backup or restore covers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from safehold.api.base import LabelSelector
from safehold.api.content import DatabaseTarget
from safehold.api.errors import Failure
from safehold.api.labels import MACHINERY_LABELS
from safehold.planning.resource_types import ResourceType

# Types never exported: derived by controllers, ephemeral, or not real objects.
NEVER_EXPORTED = frozenset(
    {
        "events",
        "events.events.k8s.io",
        "endpoints",
        "endpointslices.discovery.k8s.io",
        "controllerrevisions.apps",
        "leases.coordination.k8s.io",
        "componentstatuses",
        "nodes",
        "nodes.metrics.k8s.io",
        "pods.metrics.k8s.io",
        "csinodes.storage.k8s.io",
        "volumeattachments.storage.k8s.io",
        "certificatesigningrequests.certificates.k8s.io",
        "apiservices.apiregistration.k8s.io",
        "flowschemas.flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations.flowcontrol.apiserver.k8s.io",
        "ipaddresses.networking.k8s.io",
        "servicecidrs.networking.k8s.io",
        # Safehold's own one-shot kinds: restoring one would start a run (the catalog sync
        # re-creates Backups from the bucket). Policies and locations are configuration and
        # are taken like any custom resource.
        "backups.safehold.io",
        "restorerequests.safehold.io",
        "backupverifications.safehold.io",
        # Kopf's peering state of running operators.
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
)

# Cluster-scoped types exported when a backup includes cluster resources; each is narrowed
# to what the selected namespaces use (see planning.dependencies).
CLUSTER_TYPES = frozenset(
    {
        "namespaces",
        "customresourcedefinitions.apiextensions.k8s.io",
        "clusterroles.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "storageclasses.storage.k8s.io",
        "priorityclasses.scheduling.k8s.io",
    }
)


# Kinds of the cluster-scoped types above, as a pattern may name them.
_CLUSTER_KINDS = frozenset(
    {
        "namespace",
        "customresourcedefinition",
        "clusterrole",
        "clusterrolebinding",
        "storageclass",
        "priorityclass",
    }
)


def names_cluster_type(pattern: str) -> bool:
    """Whether a resource pattern (other than `*`) names a known cluster-scoped type."""
    head = pattern.lower().partition(".")[0]
    return head in {t.partition(".")[0] for t in CLUSTER_TYPES} or head in _CLUSTER_KINDS


class SelectionError(Failure):
    """The selection cannot be served; `reason` is a CamelCase status reason."""


def matches(rt: ResourceType, pattern: str) -> bool:
    """resource.group, resource, kind or kind.group (case-insensitive) or `*`."""
    p = pattern.lower()
    if p == "*":
        return True
    head, _, group = p.partition(".")
    names = {rt.plural.lower(), rt.kind.lower()}
    if not group:
        return head in names
    return head in names and group == rt.group.lower()


def select_types(
    types: Sequence[ResourceType], included: Sequence[str], excluded: Sequence[str]
) -> list[ResourceType]:
    """Listable namespaced types matching `included` and not `excluded`.

    Raises SelectionError(UnknownResourceType) for a pattern that matches nothing served.
    """
    for pattern in [*included, *excluded]:
        if pattern != "*" and not any(matches(rt, pattern) for rt in types):
            raise SelectionError(
                "UnknownResourceType",
                f"resource type {pattern!r} is not served by this cluster "
                "(use resource.group, e.g. deployments.apps)",
            )
    return [
        rt
        for rt in types
        if rt.namespaced
        and rt.listable
        and rt.name not in NEVER_EXPORTED
        and any(matches(rt, p) for p in included)
        and not any(matches(rt, p) for p in excluded)
    ]


def cluster_types(types: Sequence[ResourceType], excluded: Sequence[str]) -> list[ResourceType]:
    return [
        rt
        for rt in types
        if rt.name in CLUSTER_TYPES and rt.listable and not any(matches(rt, p) for p in excluded)
    ]


def cluster_custom_types(
    types: Sequence[ResourceType], custom_groups: set[tuple[str, str]], excluded: Sequence[str]
) -> list[ResourceType]:
    """Cluster-scoped types served by CRDs (e.g. ClusterIssuers): a backup with cluster
    resources takes the objects of these that its namespaced custom resources name."""
    return [
        rt
        for rt in types
        if not rt.namespaced
        and rt.listable
        and (rt.group, rt.plural) in custom_groups
        and rt.name not in NEVER_EXPORTED
        and not any(matches(rt, p) for p in excluded)
    ]


@dataclass(frozen=True)
class Scope:
    """Namespaces a run may touch, decided by where the resource lives."""

    own_namespace: str
    operator_namespace: str
    confined_to: frozenset[str] | None = None
    """A drill's scratch namespaces: the only restore targets, whoever runs it, and no
    cluster-scoped object."""

    @property
    def privileged(self) -> bool:
        return self.own_namespace == self.operator_namespace and self.confined_to is None

    def backup_namespaces(
        self,
        requested: Sequence[str] | None,
        selector: LabelSelector | None,
        include_cluster_resources: bool,
    ) -> list[str] | None:
        """Named namespaces to back up (None: resolve `selector` against the cluster)."""
        if not self.privileged:
            foreign = sorted(set(requested or ()) - {self.own_namespace})
            if foreign:
                raise SelectionError(
                    "NamespaceNotAllowed",
                    f"a backup in namespace {self.own_namespace!r} may only select its own "
                    f"namespace, not {', '.join(foreign)}",
                )
            if selector is not None:
                raise SelectionError(
                    "NamespaceNotAllowed",
                    "namespaceSelector is only allowed in the operator's namespace "
                    f"({self.operator_namespace})",
                )
            if include_cluster_resources:
                raise SelectionError(
                    "ClusterResourcesNotAllowed",
                    "includeClusterResources is only allowed in the operator's namespace "
                    f"({self.operator_namespace})",
                )
        if requested:
            return sorted(set(requested))
        if selector is not None:
            return None
        return [self.own_namespace]

    def check_database_targets(self, targets: Iterable[DatabaseTarget]) -> None:
        """A tenant dumps only database Services of its own namespace."""
        if self.privileged:
            return
        foreign = sorted(
            {
                f"{t.name} ({t.service.namespace})"
                for t in targets
                if t.service is not None and t.service.namespace not in (None, self.own_namespace)
            }
        )
        if foreign:
            raise SelectionError(
                "NamespaceNotAllowed",
                f"a backup in namespace {self.own_namespace!r} may only dump database Services "
                f"of that namespace, not target {', '.join(foreign)}",
            )

    def check_cluster_scoped(self, names: Sequence[str]) -> None:
        """A tenant restores no cluster-scoped object (they are the cluster admin's)."""
        if self.privileged or not names:
            return
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise SelectionError(
            "ClusterScopeNotAllowed",
            f"a restore in namespace {self.own_namespace!r} may not restore cluster-scoped "
            f"objects ({shown}); exclude them with excludedResources",
        )

    def check_restore_targets(self, targets: Iterable[str]) -> None:
        """A tenant may restore only into its own namespace; a drill only into its scratch
        namespaces."""
        if self.privileged:
            return
        allowed = self.confined_to if self.confined_to is not None else {self.own_namespace}
        foreign = sorted(set(targets) - allowed)
        if foreign:
            raise SelectionError(
                "NamespaceNotAllowed",
                f"a restore in namespace {self.own_namespace!r} may only restore into that "
                f"namespace, not {', '.join(foreign)}",
            )


def is_machinery(labels: dict[str, str]) -> bool:
    """Whether an object is Safehold's machinery (a mover Job, its Pod or Secret, ...)."""
    return any(key in labels for key in MACHINERY_LABELS)


def without_machinery(selector: str | None) -> str:
    """`selector` narrowed to objects that are not Safehold's machinery."""
    excluded = ",".join(f"!{key}" for key in MACHINERY_LABELS)
    return f"{selector},{excluded}" if selector else excluded


def selector_string(selector: LabelSelector | None) -> str | None:
    """A label selector in the API's query syntax."""
    if selector is None:
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        values = ",".join(expr.values or [])
        if expr.operator == "In":
            parts.append(f"{expr.key} in ({values})")
        elif expr.operator == "NotIn":
            parts.append(f"{expr.key} notin ({values})")
        elif expr.operator == "Exists":
            parts.append(expr.key)
        else:
            parts.append(f"!{expr.key}")
    return ",".join(parts) or None


def labels_match(labels: dict[str, str], selector: LabelSelector | None) -> bool:
    """Client-side evaluation of a label selector."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.match_expressions or []:
        present = expr.key in labels
        value_in = present and labels[expr.key] in (expr.values or [])
        ok = {
            "In": value_in,
            "NotIn": not value_in,
            "Exists": present,
            "DoesNotExist": not present,
        }[expr.operator]
        if not ok:
            return False
    return True
