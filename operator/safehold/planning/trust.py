"""Everything read from a bucket is untrusted input: checks of manifests and export indexes.

Whoever can write a location's bucket can write any manifest, index or restic snapshot into
it. These checks make sure that what Safehold then acts on stays inside what the bucket's
namespace may touch: a manifest under a namespace's prefix describes only that namespace's
backups; names are names; snapshot ids are ids; repository keys are the namespace's own;
paths stay relative and inside the export. A check that fails names what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from safehold.api.errors import Failure

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SNAPSHOT = re.compile(r"^[0-9a-f]{64}$")
_OBJECT_PATH = re.compile(
    r"^resources/[a-z0-9][a-z0-9.-]*/(_cluster|[a-z0-9-]{1,63})/[^/\x00]{1,300}\.json$"
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_INDEX_BYTES = 512 * 1024 * 1024
MAX_OBJECT_BYTES = 64 * 1024 * 1024


class Untrusted(Failure):
    """Something read from the bucket is not what Safehold wrote."""


def is_label(value: str) -> bool:
    return bool(_DNS_LABEL.match(value))


def is_name(value: str) -> bool:
    return bool(_DNS_SUBDOMAIN.match(value))


def check_snapshots(ids: Iterable[str | None], what: str) -> None:
    for snapshot in ids:
        if snapshot is not None and not _SNAPSHOT.match(snapshot):
            raise Untrusted("ManifestInvalid", f"{what}: {snapshot!r} is not a restic snapshot id")


def check_relative(path: str, what: str) -> None:
    """A path relative to a directory that cannot leave it."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or ".." in parts or "" in parts:
        raise Untrusted("ManifestInvalid", f"{what} {path!r} is not a plain relative path")


def check_absolute(path: str, what: str) -> None:
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts or "\x00" in path:
        raise Untrusted("ManifestInvalid", f"{what} {path!r} is not a plain absolute path")


def check_scope(
    namespace: str,
    privileged: bool,
    namespaces: Sequence[str],
    volume_namespaces: Sequence[str],
    service_namespaces: Sequence[str | None],
    cluster_resources: bool,
) -> None:
    """A manifest of a tenant's namespace describes that namespace only."""
    for ns in (*namespaces, *volume_namespaces, *(s for s in service_namespaces if s)):
        if not is_label(ns):
            raise Untrusted("ManifestInvalid", f"{ns!r} is not a namespace name")
    if privileged:
        return
    foreign = sorted(
        {*namespaces, *volume_namespaces, *(s for s in service_namespaces if s)} - {namespace}
    )
    if foreign:
        raise Untrusted(
            "ManifestOutOfScope",
            f"a manifest of namespace {namespace!r} names other namespaces: {', '.join(foreign)}",
        )
    if cluster_resources:
        raise Untrusted(
            "ManifestOutOfScope",
            f"a manifest of namespace {namespace!r} claims cluster-scoped resources",
        )


def check_repository(key: str | None, allowed: Sequence[str], what: str) -> None:
    if key is not None and key not in allowed:
        raise Untrusted("ManifestOutOfScope", f"{what}: repository {key!r} is not this one's")


def check_index_item(item: object, namespaces: Sequence[str]) -> None:
    """One entry of an export index: its fields, its path, its namespace."""
    if not isinstance(item, dict):
        raise Untrusted("IndexInvalid", "an index entry is not an object")
    for field in ("path", "resource", "apiVersion", "kind", "name"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise Untrusted("IndexInvalid", f"an index entry has no valid {field}")
    path, namespace = item["path"], item.get("namespace")
    if not _OBJECT_PATH.match(path) or ".." in path.split("/"):
        raise Untrusted("IndexInvalid", f"index path {path!r} is outside resources/")
    if namespace is not None and (not isinstance(namespace, str) or namespace not in namespaces):
        raise Untrusted(
            "IndexInvalid", f"index entry {path!r} names namespace {namespace!r} the backup lacks"
        )
    if len(item["name"]) > 253 or "/" in item["name"]:
        raise Untrusted("IndexInvalid", f"index entry {path!r} has an invalid name")


def check_object(
    obj: object, api_version: str, kind: str, namespace: str | None, name: str
) -> None:
    """An exported object is the one its index entry says."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise Untrusted("ObjectMismatch", "not a Kubernetes object")
    meta = obj["metadata"]
    found = (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"), meta.get("name"))
    if found != (api_version, kind, namespace, name):
        raise Untrusted(
            "ObjectMismatch",
            f"the file holds {found[1]} {found[2] or ''}/{found[3]} ({found[0]}), not what the "
            "index says",
        )
