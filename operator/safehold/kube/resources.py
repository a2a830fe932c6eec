"""Reading and patching Safehold custom resources."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client

from safehold import GROUP, VERSION
from safehold.api.kinds import KindInfo


def patch_status(
    custom: client.CustomObjectsApi,
    info: KindInfo,
    namespace: str,
    name: str,
    status: dict[str, Any],
) -> None:
    """Merge-patch the status subresource (lists such as conditions are replaced whole,
    so callers always send the complete list)."""
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, info.plural, name, {"status": status}
    )


def list_all(custom: client.CustomObjectsApi, info: KindInfo) -> list[dict[str, Any]]:
    """Every object of a kind in every namespace."""
    items: list[dict[str, Any]] = []
    cont: str | None = None
    while True:
        page = cast(
            "dict[str, Any]",
            custom.list_cluster_custom_object(
                GROUP, VERSION, info.plural, limit=500, _continue=cont
            ),
        )
        items.extend(page.get("items", []))
        cont = page.get("metadata", {}).get("continue")
        if not cont:
            return items
