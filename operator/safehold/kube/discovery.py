"""Discover every served resource type at its preferred version."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from safehold.kube.rest import ApiError, Rest, resource_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def name(self) -> str:
        """resource.group, e.g. deployments.apps (core types: just the plural)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        return resource_path(
            self.group, self.version, self.plural, namespace if self.namespaced else None, name
        )

    @property
    def listable(self) -> bool:
        return {"list", "get"} <= self.verbs


def _types_of(rest: Rest, group: str, version: str) -> list[ResourceType]:
    path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    doc = rest.get(path)
    return [
        ResourceType(
            group=group,
            version=version,
            kind=r["kind"],
            plural=r["name"],
            namespaced=bool(r.get("namespaced")),
            verbs=frozenset(r.get("verbs") or ()),
        )
        for r in doc.get("resources", [])
        if "/" not in r["name"]  # subresources such as pods/log
    ]


def discover(rest: Rest) -> tuple[list[ResourceType], list[str]]:
    """All resource types at their group's preferred version, and warnings for groups that
    could not be read (e.g. an aggregated API whose backend is down)."""
    types = _types_of(rest, "", "v1")
    warnings: list[str] = []
    for group in rest.get("/apis").get("groups", []):
        preferred = group.get("preferredVersion", {}).get("version")
        if not preferred:
            continue
        try:
            types += _types_of(rest, group["name"], preferred)
        except ApiError as err:
            warnings.append(f"API group {group['name']}/{preferred} unavailable: {err.message}")
            log.warning("discovery of %s/%s failed: %s", group["name"], preferred, err)
    return types, warnings
