"""Pure builders of the Backup and RestoreRequest objects the CLI creates or prints.

Every spec goes through its pydantic model, so the CLI cannot produce a body the CRD schema
rejects. The result keeps only what the user asked for (defaults are the API server's and
the operator's business), so `-o yaml` prints what a person would write into Git.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from safehold import API_VERSION
from safehold.api.backup import BackupSpec
from safehold.api.base import ApiModel
from safehold.api.kinds import RESTORE
from safehold.api.restore import RestoreRequestSpec
from safehold.planning.builders import backup_object

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ManifestError(ValueError):
    """The arguments do not make a valid object; the message says which and why."""


def _explain(err: ValidationError, names: Mapping[str, str]) -> str:
    problems = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"])
        where = next((flag for key, flag in names.items() if loc.startswith(key)), loc)
        value = item.get("input")
        shown = f" {value!r}" if isinstance(value, str | int) else ""
        problems.append(f"{where}:{shown} {item['msg']}")
    return "; ".join(problems)


def _wire(model: type[ApiModel], spec: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Validate `spec` (camelCase) with `model`; return the wire form of what was set."""
    try:
        parsed = model.model_validate(spec)
    except ValidationError as err:
        raise ManifestError(_explain(err, names)) from None
    wire: dict[str, Any] = parsed.model_dump(
        by_alias=True, exclude_none=True, exclude_unset=True, mode="json"
    )
    return wire


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise ManifestError(
            f"name {name!r}: must be lower case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


BACKUP_FLAGS = {
    "policyRef": "--from-policy",
    "storageLocation": "--location",
    "selection.namespaces": "--include-namespaces",
    "selection.labelSelector": "--selector",
    "selection.includedResources": "--include-resources",
    "selection.excludedResources": "--exclude-resources",
    "ttl": "--ttl",
}

RESTORE_FLAGS = {
    "backupRef": "--from-backup",
    "policyRef": "--from-policy",
    "includedNamespaces": "--include-namespaces",
    "includedResources": "--include-resources",
    "excludedResources": "--exclude-resources",
    "labelSelector": "--selector",
    "namespaceMapping": "--namespace-mapping",
    "existingResourcePolicy": "--existing-resource-policy",
}


def backup(
    name: str,
    *,
    namespace: str | None = None,
    policy: str | None = None,
    location: str | None = None,
    namespaces: Sequence[str] | None = None,
    selector: Mapping[str, str] | None = None,
    include_resources: Sequence[str] | None = None,
    exclude_resources: Sequence[str] | None = None,
    include_cluster_resources: bool = False,
    ttl: str | None = None,
) -> dict[str, Any]:
    """A Backup from a policy, or with an inline location and selection."""
    if (policy is None) == (location is None):
        raise ManifestError("set exactly one of --from-policy or --location")
    has_selection = (
        namespaces is not None
        or selector is not None
        or include_resources is not None
        or exclude_resources is not None
        or include_cluster_resources
    )
    spec: dict[str, Any] = {}
    if policy is not None:
        if has_selection:
            raise ManifestError(
                "--include-namespaces, --include-resources, --exclude-resources, --selector and "
                "--include-cluster-resources need --location (a policy brings its own selection)"
            )
        spec["policyRef"] = {"name": policy}
    else:
        spec["storageLocation"] = location
        selection: dict[str, Any] = {}
        if namespaces is not None:
            selection["namespaces"] = list(namespaces)
        if selector is not None:
            selection["labelSelector"] = {"matchLabels": dict(selector)}
        if include_resources is not None:
            selection["includedResources"] = list(include_resources)
        if exclude_resources is not None:
            selection["excludedResources"] = list(exclude_resources)
        if include_cluster_resources:
            selection["includeClusterResources"] = True
        if selection:
            spec["selection"] = selection
    if ttl is not None:
        spec["ttl"] = ttl
    meta = _metadata(name, namespace)
    return backup_object(meta["name"], meta.get("namespace"), _wire(BackupSpec, spec, BACKUP_FLAGS))


def _mapping(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """--namespace-mapping pairs as a mapping; each name valid, no source mapped twice."""
    mapping: dict[str, str] = {}
    for source, target in pairs:
        for ns in (source, target):
            if len(ns) > 63 or not _LABEL.fullmatch(ns):
                raise ManifestError(f"--namespace-mapping: {ns!r} is not a namespace name")
        if mapping.get(source, target) != target:
            raise ManifestError(
                f"--namespace-mapping: {source!r} is mapped twice ({mapping[source]!r} "
                f"and {target!r})"
            )
        mapping[source] = target
    return mapping


def restore(
    name: str,
    *,
    namespace: str | None = None,
    backup: str | None = None,
    policy: str | None = None,
    namespaces: Sequence[str] | None = None,
    selector: Mapping[str, str] | None = None,
    include_resources: Sequence[str] | None = None,
    exclude_resources: Sequence[str] | None = None,
    namespace_mapping: Sequence[tuple[str, str]] = (),
    existing_resource_policy: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """A RestoreRequest from a Backup or from the newest successful Backup of a policy."""
    if (backup is None) == (policy is None):
        raise ManifestError("set exactly one of --from-backup or --from-policy")
    spec: dict[str, Any] = {}
    if backup is not None:
        spec["backupRef"] = {"name": backup}
    else:
        spec["policyRef"] = {"name": policy}
    if namespaces is not None:
        spec["includedNamespaces"] = list(namespaces)
    if include_resources is not None:
        spec["includedResources"] = list(include_resources)
    if exclude_resources is not None:
        spec["excludedResources"] = list(exclude_resources)
    if selector is not None:
        spec["labelSelector"] = {"matchLabels": dict(selector)}
    if namespace_mapping:
        spec["namespaceMapping"] = _mapping(namespace_mapping)
    if existing_resource_policy is not None:
        spec["existingResourcePolicy"] = existing_resource_policy
    if dry_run:
        spec["dryRun"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": RESTORE.kind,
        "metadata": _metadata(name, namespace),
        "spec": _wire(RestoreRequestSpec, spec, RESTORE_FLAGS),
    }
