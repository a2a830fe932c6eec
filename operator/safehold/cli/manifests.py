"""Pure builders of the Backup, RestoreRequest and BackupVerification objects the CLI creates
or prints.

Every spec goes through its pydantic model, so the CLI cannot produce a body the CRD schema
rejects. The result keeps only what the user asked for (defaults are the API server's and
the operator's business), so `-o yaml` prints what a person would write into Git.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from safehold import API_VERSION
from safehold.api.backup import BackupSpec
from safehold.api.base import ApiModel
from safehold.api.kinds import RESTORE, VERIFICATION
from safehold.api.restore import RestoreRequestSpec
from safehold.api.verification import BackupVerificationSpec
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
    "databases.targetReadyTimeout": "--target-ready-timeout",
    "databases.targets": "--database-* options",
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


@dataclass(frozen=True)
class DatabaseOptions:
    """The `restore create` flags about database targets, as parsed by the argument types."""

    mapping: Sequence[tuple[str, str, str]] = ()
    """(target, database in the backup, database to restore it as)"""
    clean: Sequence[str] = ()
    restore_accounts: Sequence[str] = ()
    host: Sequence[tuple[str, str, int | None]] = ()
    credentials: Sequence[tuple[str, str]] = ()
    tls: Sequence[tuple[str, str, str | None]] = ()
    ready_timeout: str | None = None


def _set_once(target: dict[str, Any], key: str, value: Any, flag: str, name: str) -> None:
    if target.get(key, value) != value:
        raise ManifestError(f"{flag}: target {name!r} is given twice ({target[key]!r}, {value!r})")
    target[key] = value


def _database_mapping(items: Sequence[tuple[str, str, str]], target: dict[str, Any]) -> None:
    mapping: dict[str, str] = target.setdefault("databaseMapping", {})
    name = target["target"]
    for source, new in (item[1:] for item in items if item[0] == name):
        if mapping.get(source, new) != new:
            raise ManifestError(
                f"--database-mapping: {name}:{source} is mapped twice "
                f"({mapping[source]!r} and {new!r})"
            )
        mapping[source] = new
    clashes = sorted({new for new in mapping.values() if list(mapping.values()).count(new) > 1})
    if clashes:
        raise ManifestError(
            f"--database-mapping: target {name!r} maps two databases to {clashes[0]!r}"
        )
    if not mapping:
        del target["databaseMapping"]


def _databases(options: DatabaseOptions) -> dict[str, Any] | None:
    """spec.databases from the flags: one targets[] entry per target named, in order."""
    names = [item[0] for item in options.mapping] + [item[0] for item in options.host]
    names += [item[0] for item in options.credentials] + [item[0] for item in options.tls]
    names += [*options.clean, *options.restore_accounts]
    targets: dict[str, dict[str, Any]] = {n: {"target": n} for n in dict.fromkeys(names)}
    for name, target in targets.items():
        _database_mapping(options.mapping, target)
        for host_name, host, port in options.host:
            if host_name == name:
                _set_once(target, "host", host, "--database-host", name)
                if port is not None:
                    _set_once(target, "port", port, "--database-host", name)
        for secret_name, secret in options.credentials:
            if secret_name == name:
                _set_once(target, "credentialsSecret", secret, "--database-credentials", name)
        for tls_name, mode, ca_secret in options.tls:
            if tls_name == name:
                tls = {"mode": mode} | ({"caSecret": ca_secret} if ca_secret else {})
                _set_once(target, "tls", tls, "--database-tls", name)
        if name in options.clean:
            target["clean"] = True
        if name in options.restore_accounts:
            target["restoreAccounts"] = True
    databases: dict[str, Any] = {}
    if targets:
        databases["targets"] = list(targets.values())
    if options.ready_timeout is not None:
        databases["targetReadyTimeout"] = options.ready_timeout
    return databases or None


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
    databases: DatabaseOptions | None = None,
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
    database_spec = _databases(databases) if databases is not None else None
    if database_spec is not None:
        spec["databases"] = database_spec
    return {
        "apiVersion": API_VERSION,
        "kind": RESTORE.kind,
        "metadata": _metadata(name, namespace),
        "spec": _wire(RestoreRequestSpec, spec, RESTORE_FLAGS),
    }


_DRILL_NAME_LIMIT = VERIFICATION.name_limit or 253

VERIFICATION_FLAGS = {
    "backupRef": "--from-backup",
    "policyRef": "--from-policy",
    "keepOnFailure": "--keep-on-failure",
    "timeout": "--timeout",
    "checks.workloads": "--no-workloads",
}


def verification(
    name: str,
    *,
    namespace: str | None = None,
    backup: str | None = None,
    policy: str | None = None,
    keep_on_failure: str | None = None,
    timeout: str | None = None,
    workloads: bool = True,
) -> dict[str, Any]:
    """A BackupVerification (one restore drill) of a Backup, or of the newest successful, not
    Corrupt, Backup of a policy."""
    if (backup is None) == (policy is None):
        raise ManifestError("set exactly one of --from-backup or --from-policy")
    spec: dict[str, Any] = {}
    if backup is not None:
        spec["backupRef"] = {"name": backup}
    else:
        spec["policyRef"] = {"name": policy}
    if not workloads:
        spec["checks"] = {"workloads": False}
    if keep_on_failure is not None:
        spec["keepOnFailure"] = keep_on_failure
    if timeout is not None:
        spec["timeout"] = timeout
    meta = _metadata(name, namespace)
    if len(name) > _DRILL_NAME_LIMIT:
        raise ManifestError(f"name {name!r}: at most {_DRILL_NAME_LIMIT} characters")
    wire = _wire(BackupVerificationSpec, spec, VERIFICATION_FLAGS)
    source = {key: wire.pop(key) for key in ("backupRef", "policyRef") if key in wire}
    return {
        "apiVersion": API_VERSION,
        "kind": VERIFICATION.kind,
        "metadata": meta,
        "spec": source | wire,  # the source first, as a person writes it
    }


def verification_name(source: str, now: datetime) -> str:
    """The default name of a drill by hand: `<source>-drill-<UTC time>`, the source shortened
    so that the whole stays within the kind's 63 characters."""
    suffix = f"-drill-{now.astimezone(UTC).strftime('%Y%m%d-%H%M%S')}"
    head = source[: _DRILL_NAME_LIMIT - len(suffix)].rstrip("-.")
    return head + suffix
