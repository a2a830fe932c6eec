"""Discover every served resource type at its preferred version."""

from __future__ import annotations

import logging

from safehold.kube.rest import ApiError, Rest
from safehold.planning.resource_types import ResourceType

log = logging.getLogger(__name__)


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
