"""Export Kubernetes objects into a directory, one JSON file per object, page by page.

Layout under the export root (documented in docs/backup-format.md):

    index.json                                    every object: path, apiVersion, kind, sha256
    resources/<resource.group>/<namespace>/<name>.json
    resources/<resource.group>/_cluster/<name>.json     cluster-scoped objects

Memory stays bounded by one list page: objects are written as they arrive.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from safehold.api.base import JSON
from safehold.kube.rest import ApiError, Rest
from safehold.planning.dependencies import CLUSTER_EXPORT_ORDER, Dependencies
from safehold.planning.resource_types import ResourceType

CLUSTER_DIR = "_cluster"
INDEX = "index.json"


@dataclass
class ExportResult:
    total: int = 0
    by_resource: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    root: str = ""
    """The directory exported into (stored under this absolute path in the snapshot)."""


ProgressFn = Callable[[int], None]


def _safe(name: str) -> str:
    # Object names are DNS names; keep path components harmless all the same.
    return name.replace("/", "%2F")


class Exporter:
    def __init__(self, rest: Rest, root: Path, progress: ProgressFn | None = None) -> None:
        self.rest = rest
        self.root = root
        self.progress = progress
        self.index: list[JSON] = []
        self.result = ExportResult()
        self._last_report = 0.0

    def _write(self, rt: ResourceType, obj: JSON) -> None:
        meta = obj.setdefault("metadata", {})
        meta.pop("managedFields", None)  # large, server-owned, useless on restore
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        namespace = meta.get("namespace") or CLUSTER_DIR
        rel = f"resources/{rt.name}/{namespace}/{_safe(meta['name'])}.json"
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.index.append(
            {
                "path": rel,
                "resource": rt.name,
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "namespace": meta.get("namespace"),
                "name": meta["name"],
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )
        self.result.total += 1
        self.result.bytes += len(data)
        self.result.by_resource[rt.name] += 1
        now = time.monotonic()
        if self.progress and now - self._last_report > 2.0:
            self._last_report = now
            self.progress(self.result.total)

    def export_namespaced(
        self,
        types: Sequence[ResourceType],
        namespaces: Sequence[str],
        selector: str | None,
        custom_groups: set[tuple[str, str]],
        deps: Dependencies,
    ) -> None:
        """Export namespaced types. Many namespaces are listed cluster-wide and filtered,
        one namespace is listed directly (all a tenant may do)."""
        wanted = set(namespaces)
        deps.namespaces |= wanted
        cluster_wide = len(wanted) > 1
        for rt in types:
            targets: list[str | None] = [None] if cluster_wide else list(wanted)
            for ns in targets:
                try:
                    for page in self.rest.list_pages(rt.path(ns), label_selector=selector):
                        for obj in page:
                            if obj["metadata"].get("namespace") not in wanted:
                                continue
                            custom = (rt.group, rt.plural) in custom_groups
                            deps.observe(rt.group, rt.plural, custom, obj)
                            self._write(rt, obj)
                except ApiError as err:
                    where = f" in {ns}" if ns else ""
                    self.result.warnings.append(f"could not list {rt.name}{where}: {err.message}")

    def export_cluster(
        self,
        types: Sequence[ResourceType],
        custom: Sequence[ResourceType],
        deps: Dependencies,
    ) -> None:
        """Cluster-scoped objects the namespaced ones depend on: namespaces, then the custom
        resources they name (before CRDs, whose selection those add to), then the rest."""
        by_name = {rt.name: rt for rt in types}
        for name in CLUSTER_EXPORT_ORDER:
            rt = by_name.get(name)
            if rt is not None:
                self._export_wanted(rt, partial(_wanted_builtin, deps, rt))
            if name == "namespaces":
                for crt in custom:
                    self._export_wanted(crt, partial(_wanted_custom, deps, crt))

    def _export_wanted(self, rt: ResourceType, wanted: Callable[[JSON], bool]) -> None:
        try:
            for page in self.rest.list_pages(rt.path()):
                for obj in page:
                    if wanted(obj):
                        self._write(rt, obj)
        except ApiError as err:
            self.result.warnings.append(f"could not list {rt.name}: {err.message}")

    def finish(self) -> ExportResult:
        """Write the index; its sha256 (which covers every object's sha256) is the export's."""
        self.index.sort(key=lambda e: e["path"])
        data = json.dumps(
            {"formatVersion": 1, "objects": self.index}, indent=0, sort_keys=True
        ).encode()
        (self.root / INDEX).write_bytes(data)
        self.result.sha256 = hashlib.sha256(data).hexdigest()
        self.result.bytes += len(data)
        return self.result


def _wanted_builtin(deps: Dependencies, rt: ResourceType, obj: JSON) -> bool:
    return deps.wanted(rt.name, obj)


def _wanted_custom(deps: Dependencies, rt: ResourceType, obj: JSON) -> bool:
    return deps.takes_cluster_custom(rt.group, rt.plural, rt.kind, obj["metadata"]["name"])


def custom_resource_types(rest: Rest) -> set[tuple[str, str]]:
    """(group, plural) of every type served by a CRD."""
    found: set[tuple[str, str]] = set()
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for page in rest.list_pages(path):
        for crd in page:
            found.add((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
    return found
