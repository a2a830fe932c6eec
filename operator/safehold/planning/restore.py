"""Pure restore planning: which objects, in which order, cleaned how, mapped where."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from safehold.api.backup import DatabaseResult, ItemResult, VolumeResult
from safehold.api.base import JSON, LabelSelector
from safehold.api.labels import ANNOTATION_COPY_OF
from safehold.api.restore import DatabaseRestore, RestoreRequestSpec, VolumeRestore
from safehold.planning.names import object_name
from safehold.planning.selection import (
    NEVER_EXPORTED,
    Scope,
    is_machinery,
    labels_match,
    names_cluster_type,
)

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


# Cluster-scoped custom resources (e.g. a ClusterIssuer): after their CRDs, before the
# namespaced objects that name them.
CLUSTER_CUSTOM_PRIORITY = 3


def priority(resource: str, cluster_scoped: bool = False) -> int:
    if resource in _PRIORITY:
        return _PRIORITY[resource]
    return CLUSTER_CUSTOM_PRIORITY if cluster_scoped else REST_PRIORITY


@dataclass(frozen=True)
class Entry:
    """One object of the backup's index."""

    path: str
    resource: str
    api_version: str
    kind: str
    namespace: str | None
    name: str
    sha256: str = ""
    """Checksum of the exported file (empty in indexes that lack it)."""

    @classmethod
    def from_index(cls, item: JSON) -> Entry:
        digest = item.get("sha256")
        return cls(
            path=item["path"],
            resource=item["resource"],
            api_version=item["apiVersion"],
            kind=item["kind"],
            namespace=item.get("namespace"),
            name=item["name"],
            sha256=digest if isinstance(digest, str) else "",
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


def skip_reason(entry: Entry, obj: JSON) -> tuple[str, str] | None:
    """(reason, message) when an object is never restored: Safehold's own machinery and
    one-shot objects (restoring them would start runs), and what a controller or the cluster
    recreates."""
    meta = obj.get("metadata") or {}
    if entry.resource in NEVER_EXPORTED:
        return "SafeholdInternal", f"{entry.kind} objects are never restored (they start runs)"
    if is_machinery(meta.get("labels") or {}):
        return "SafeholdInternal", "Safehold's machinery of an earlier run"
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return "NotRestorable", f"managed by its controller {ref.get('kind')}/{ref.get('name')}"
    why = None
    if entry.resource == "secrets" and obj.get("type") == "kubernetes.io/service-account-token":
        why = "service account token Secret; the cluster issues new tokens"
    elif entry.resource == "configmaps" and entry.name == "kube-root-ca.crt":
        why = "published by the cluster in every namespace"
    elif entry.resource == "namespaces" and entry.name in ("default", "kube-system", "kube-public"):
        why = "system namespace"
    return ("NotRestorable", why) if why else None


def map_namespace(namespace: str | None, mapping: Mapping[str, str]) -> str | None:
    if namespace is None:
        return None
    return mapping.get(namespace, namespace)


def _clean_metadata(meta: JSON, labels: Mapping[str, str]) -> None:
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


def _clean_service(out: JSON, spec: JSON) -> None:
    if spec.get("clusterIP") not in ("None", None):
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    spec.pop("healthCheckNodePort", None)
    for port in spec.get("ports") or []:
        port.pop("nodePort", None)


def _clean_job(out: JSON, spec: JSON) -> None:
    spec.pop("selector", None)
    for where in (out["metadata"], (spec.get("template") or {}).get("metadata") or {}):
        for key in _JOB_LABELS:
            (where.get("labels") or {}).pop(key, None)


# What the cluster assigns anew, per resource type.
_SPEC_CLEANERS: dict[str, Callable[[JSON, JSON], None]] = {
    "services": _clean_service,
    "persistentvolumeclaims": lambda out, spec: spec.pop("volumeName", None),
    "pods": lambda out, spec: spec.pop("nodeName", None),
    "jobs.batch": _clean_job,
    "serviceaccounts": lambda out, spec: out.pop("secrets", None),  # tokens are issued anew
}
_BINDINGS = (
    "rolebindings.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
)


def clean(entry: Entry, obj: JSON, mapping: Mapping[str, str], labels: Mapping[str, str]) -> JSON:
    """A copy of `obj` a different cluster accepts: server-set fields removed, namespace
    mapped, restore labels added."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    _clean_metadata(meta, labels)
    if entry.namespace is not None:
        meta["namespace"] = map_namespace(entry.namespace, mapping)
    elif entry.resource == "namespaces":
        meta["name"] = mapping.get(entry.name, entry.name)
        out.pop("spec", None)  # finalizers are the namespace controller's
    cleaner = _SPEC_CLEANERS.get(entry.resource)
    if cleaner is not None:
        cleaner(out, out.get("spec") or {})
    if entry.resource == _BINDINGS[1] and mapped_subjects(out, mapping):
        return _mapped_copy(out, mapping)
    if entry.resource in _BINDINGS:
        for subject in out.get("subjects") or []:
            if subject.get("namespace"):
                subject["namespace"] = map_namespace(subject["namespace"], mapping)
    return out


def mapped_subjects(binding: JSON, mapping: Mapping[str, str]) -> list[JSON]:
    """The subjects of a binding that live in a namespace the restore maps elsewhere."""
    return [
        s
        for s in binding.get("subjects") or []
        if s.get("namespace") and mapping.get(s["namespace"], s["namespace"]) != s["namespace"]
    ]


def _mapped_copy(binding: JSON, mapping: Mapping[str, str]) -> JSON:
    """A ClusterRoleBinding granting its role to the mapped copies of its subjects, under a
    new name: the original keeps its subjects (a restored copy never takes an original's
    rights away, nor gives them to anyone but the copy's own ServiceAccounts)."""
    subjects = [
        {**s, "namespace": mapping[s["namespace"]]} for s in mapped_subjects(binding, mapping)
    ]
    targets = sorted({s["namespace"] for s in subjects})
    meta = binding["metadata"]
    original = meta["name"]
    meta["name"] = object_name(original, *targets, limit=253)
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_COPY_OF: original}
    binding["subjects"] = subjects
    return binding


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


# Set by the server or the cluster, never by a backup: not drift.
_SERVER_PATHS = frozenset(
    {
        *(f"metadata.{key}" for key in _SERVER_METADATA),
        *(f"metadata.annotations.{key}" for key in _SERVER_ANNOTATIONS),
        "metadata.finalizers",
        "spec.clusterIP",
        "spec.clusterIPs",
        "spec.healthCheckNodePort",
        "spec.volumeName",
        "spec.nodeName",
        "spec.selector",
        "secrets",
    }
)
MAX_KEPT_PATHS = 20


def kept_paths(desired: JSON, existing: JSON, depth: int = 3) -> list[str]:
    """Dotted paths (to `depth`) the live object holds and the backup's copy lacks: an
    `update` restore takes over every field the backup holds and leaves these as they are
    (they were set by another field manager). Server-set fields are not listed."""
    found: list[str] = []

    def walk(have: Any, want: Any, path: str, level: int) -> None:
        for key in sorted(have):
            sub = f"{path}.{key}" if path else key
            if (not path and key == "status") or sub in _SERVER_PATHS:
                continue
            if key not in want:
                found.append(sub)
            elif isinstance(have[key], dict) and isinstance(want[key], dict) and level + 1 < depth:
                walk(have[key], want[key], sub, level + 1)

    walk(existing, desired, "", 0)
    return found[:MAX_KEPT_PATHS]


def sort_entries(entries: Sequence[Entry]) -> list[Entry]:
    return sorted(
        entries,
        key=lambda e: (
            priority(e.resource, e.namespace is None),
            e.resource,
            e.namespace or "",
            e.name,
        ),
    )


# ---------------------------------------------------------------------- the restore plan
StageName = Literal[
    "cluster", "namespaces", "configuration", "volumes", "workloads", "resources", "databases"
]
STAGES: tuple[StageName, ...] = (
    "cluster",
    "namespaces",
    "configuration",
    "volumes",
    "workloads",
    "resources",
    "databases",
)


def stage_of(resource: str, cluster_scoped: bool = False) -> StageName:
    """The stage an object of this resource type is restored in."""
    rank = priority(resource, cluster_scoped)
    if resource == "namespaces":
        return "namespaces"
    if resource == "persistentvolumeclaims":
        return "volumes"
    if rank <= 3:
        return "cluster"
    if rank <= 6:
        return "configuration"
    if rank == 7:
        return "workloads"
    return "resources"


@dataclass(frozen=True)
class PlannedObject:
    """One object of the backup, where it goes, and whether the plan already skips it."""

    entry: Entry
    target_namespace: str | None
    skip: tuple[str, str] | None = None
    """(reason, message) when the plan leaves it to another step."""


@dataclass(frozen=True)
class PlannedVolume:
    backed_up: VolumeResult
    target_namespace: str


@dataclass(frozen=True)
class Stage:
    """One step of a restore, executed in order: its objects first, then its volume data
    (volumes stage) or database targets (databases stage)."""

    name: StageName
    objects: tuple[PlannedObject, ...] = ()
    volumes: tuple[PlannedVolume, ...] = ()
    databases: tuple[DatabaseResult, ...] = ()
    unavailable_databases: tuple[DatabaseResult, ...] = ()
    """Database targets the backup has no dump of, already with their result (databases
    stage; see `unavailable_databases`)."""
    create_namespaces: tuple[str, ...] = ()
    """Target namespaces that have no Namespace object in the backup (namespaces stage)."""

    @property
    def size(self) -> int:
        return (
            len(self.objects)
            + len(self.volumes)
            + len(self.databases)
            + len(self.unavailable_databases)
            + len(self.create_namespaces)
        )


@dataclass(frozen=True)
class RestorePlan:
    stages: tuple[Stage, ...]

    def stage(self, name: StageName) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _wanted_volumes(
    spec: RestoreRequestSpec, volumes: Sequence[VolumeResult]
) -> list[PlannedVolume]:
    wanted = spec.volumes or VolumeRestore()
    if not wanted.enabled:
        return []
    names = set(wanted.pvcs or ())
    included = set(spec.included_namespaces or ())
    return [
        PlannedVolume(v, spec.namespace_mapping.get(v.namespace, v.namespace))
        for v in volumes
        if v.result == "Succeeded"
        and (not names or v.pvc in names or f"{v.namespace}/{v.pvc}" in names)
        and (not included or v.namespace in included)
    ]


def _wanted_databases(
    spec: RestoreRequestSpec, databases: Sequence[DatabaseResult]
) -> list[DatabaseResult]:
    if not (spec.databases or DatabaseRestore()).enabled:
        return []
    return [d for d in databases if d.result == "Succeeded"]


def unavailable_databases(
    spec: RestoreRequestSpec, databases: Sequence[DatabaseResult]
) -> list[DatabaseResult]:
    """The results of the targets a restore cannot restore, decided before it runs: a target
    the request names (spec.databases.targets) that the backup does not hold, or whose dump
    failed, fails; a target it does not name whose dump failed is skipped."""
    wanted = spec.databases or DatabaseRestore()
    if not wanted.enabled:
        return []
    named = {t.target for t in wanted.targets}
    out = []
    for d in databases:
        if d.result == "Succeeded":
            continue
        why = f"TargetNotBackedUp: its dump failed at backup time ({d.message or d.result})"
        verdict: ItemResult = "Failed" if d.target in named else "Skipped"
        out.append(DatabaseResult(target=d.target, type=d.type, result=verdict, message=why))
    held = sorted(d.target for d in databases)
    for name in sorted(named - set(held)):
        has = f"it has {', '.join(held)}" if held else "it has no database target"
        message = f"TargetNotInBackup: the backup has no database target {name} ({has})"
        out.append(DatabaseResult(target=name, type="", result="Failed", message=message))
    return out


def plan_restore(
    entries: Sequence[Entry],
    spec: RestoreRequestSpec,
    volumes: Sequence[VolumeResult],
    databases: Sequence[DatabaseResult],
    scope: Scope,
) -> RestorePlan:
    """The ordered stages of a restore of `entries` (the backup's index), its volumes and its
    database targets. Raises SelectionError when the request reaches outside its scope."""
    mapping = spec.namespace_mapping
    scope.check_restore_targets(mapping.values())
    filters = Filters(
        spec.included_namespaces,
        spec.included_resources,
        spec.excluded_resources,
        spec.label_selector,
    )
    chosen = [e for e in entries if filters.wants_entry(e)]
    targets = sorted({t for e in chosen if (t := map_namespace(e.namespace, mapping))})
    scope.check_restore_targets(targets)
    scope.check_cluster_scoped(
        [e.label() for e in chosen if e.namespace is None]
        + [f"includedResources {p}" for p in spec.included_resources if names_cluster_type(p)]
    )
    planned_volumes = _wanted_volumes(spec, volumes)
    scope.check_restore_targets(v.target_namespace for v in planned_volumes)
    from_snapshot = {
        (v.backed_up.namespace, v.backed_up.pvc)
        for v in planned_volumes
        if v.backed_up.mode == "snapshot"
    }
    in_backup = {map_namespace(e.name, mapping) for e in chosen if e.resource == "namespaces"}
    by_stage: dict[StageName, list[PlannedObject]] = {name: [] for name in STAGES}
    for entry in sort_entries(chosen):
        skip = None
        if (
            entry.resource == "persistentvolumeclaims"
            and (entry.namespace, entry.name) in from_snapshot
        ):
            skip = ("RestoredFromSnapshot", "created from its VolumeSnapshot by the volume restore")
        by_stage[stage_of(entry.resource, entry.namespace is None)].append(
            PlannedObject(entry, map_namespace(entry.namespace, mapping), skip)
        )
    return RestorePlan(
        (
            Stage("cluster", tuple(by_stage["cluster"])),
            Stage(
                "namespaces",
                tuple(by_stage["namespaces"]),
                create_namespaces=tuple(t for t in targets if t not in in_backup),
            ),
            Stage("configuration", tuple(by_stage["configuration"])),
            Stage("volumes", tuple(by_stage["volumes"]), volumes=tuple(planned_volumes)),
            Stage("workloads", tuple(by_stage["workloads"])),
            Stage("resources", tuple(by_stage["resources"])),
            Stage(
                "databases",
                databases=tuple(_wanted_databases(spec, databases)),
                unavailable_databases=tuple(unavailable_databases(spec, databases)),
            ),
        )
    )
