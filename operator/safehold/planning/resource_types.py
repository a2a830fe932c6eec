"""Value types of the Kubernetes API surface a backup works with: resource types and paths."""

from __future__ import annotations

from dataclasses import dataclass


def resource_path(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """The REST path of a collection or object."""
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


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
