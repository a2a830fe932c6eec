"""Applying a restore's objects one by one: cleaned, created or updated (never deleted), each
outcome recorded; in a dry run the plan is simulated in order, so objects whose namespace or
CustomResourceDefinition the restore creates first count as created."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.api.base import JSON
from safehold.api.labels import FIELD_MANAGER, LABEL_RESTORED_BY
from safehold.api.restore import RestoreCounts, RestoreRequestSpec
from safehold.engine.errors import RunError
from safehold.kube.rest import ApiError, Rest
from safehold.planning import trust
from safehold.planning.builders import namespace_body
from safehold.planning.names import label_value
from safehold.planning.resource_types import resource_path
from safehold.planning.restore import (
    CRD_RESOURCE,
    Entry,
    Filters,
    PlannedObject,
    clean,
    diff_paths,
    kept_paths,
    owner_references,
    skip_reason,
)

log = logging.getLogger(__name__)


@dataclass
class Results:
    items: list[JSON] = field(default_factory=list)
    counts: RestoreCounts = field(default_factory=RestoreCounts)
    errors: list[str] = field(default_factory=list)

    def add(self, planned: PlannedObject, stage: str, action: str, **extra: Any) -> None:
        entry, target_ns = planned.entry, planned.target_namespace
        self.items.append(
            {
                "stage": stage,
                "resource": entry.resource,
                "namespace": entry.namespace,
                "name": entry.name,
                "targetNamespace": target_ns,
                "action": action,
                **extra,
            }
        )
        key = {"create": "created", "update": "updated"}.get(action, action)
        setattr(self.counts, key, getattr(self.counts, key) + 1)
        if action == "failed":
            self.errors.append(f"{entry.label(target_ns)}: {extra.get('message', '')}")


@dataclass(frozen=True)
class Missing:
    """Why the API server answered 404 for an object, and whether this restore creates what
    is missing in an earlier step."""

    reason: str
    message: str
    created_earlier: bool


class Simulation:
    """The namespaces and custom resource types this restore has created so far (in a dry
    run: would have), so that later objects are judged against the cluster as it would be."""

    def __init__(self) -> None:
        self.namespaces: set[str] = set()
        self.types: set[tuple[str, str]] = set()  # (group, plural)
        self._served: dict[str, set[str]] = {}  # group/version -> plurals

    def record(self, entry: Entry, desired: JSON) -> None:
        if entry.resource == "namespaces":
            self.namespaces.add(desired["metadata"]["name"])
        elif entry.resource == CRD_RESOURCE:
            spec = desired.get("spec") or {}
            self.types.add((str(spec.get("group")), str((spec.get("names") or {}).get("plural"))))

    def _is_served(self, rest: Rest, entry: Entry) -> bool:
        key = entry.api_version
        if key not in self._served:
            path = f"/apis/{key}" if entry.group else f"/api/{key}"
            doc = rest.get_or_none(path) or {}
            self._served[key] = {r.get("name") for r in doc.get("resources") or []}
        return entry.plural in self._served[key]

    def missing(self, rest: Rest, entry: Entry, namespace: str | None) -> Missing:
        parts: list[str] = []
        earlier = True
        reason = "NotFound"
        ns_path = resource_path("", "v1", "namespaces", name=namespace) if namespace else None
        if ns_path and rest.get_or_none(ns_path) is None:
            reason = "NamespaceNotFound"
            earlier = namespace in self.namespaces
            then = "this restore creates it first" if earlier else "this restore does not create it"
            parts.append(f"namespace {namespace} does not exist; {then}")
        if not self._is_served(rest, entry):
            reason = "ResourceTypeNotServed" if reason == "NotFound" else reason
            created = (entry.group, entry.plural) in self.types
            earlier = earlier and created
            parts.append(
                f"{entry.resource} ({entry.api_version}) is not served by this cluster"
                + (
                    "; this restore creates its CustomResourceDefinition first"
                    if created
                    else " and this restore creates no CustomResourceDefinition for it"
                )
            )
        if not parts:
            return Missing("NotFound", "the API server answered 404", False)
        return Missing(reason, "; ".join(parts), earlier)


def read_confined(root: Path, relative: str, limit: int) -> bytes:
    """A regular file below `root`, never through a symbolic link and never outside it."""
    trust.check_relative(relative, "path")
    path = root / relative
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(path.parent)]) != base:
        raise trust.Untrusted("PathOutsideExport", f"{relative!r} leads outside the export")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise trust.Untrusted("PathOutsideExport", f"{relative!r}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise trust.Untrusted("PathOutsideExport", f"{relative!r} is not a regular file")
        if info.st_size > limit:
            raise trust.Untrusted("ObjectTooLarge", f"{relative!r} is larger than {limit} bytes")
        return handle.read(limit + 1)


class Applier:
    """Applies cleaned objects one by one and records what happened to each."""

    def __init__(
        self,
        rest: Rest,
        spec: RestoreRequestSpec,
        restore: str,
        results: Results,
        workdir: Path,
        transform: Callable[[Entry, JSON], JSON] | None = None,
    ) -> None:
        self.rest = rest
        self.transform = transform
        """Applied to each cleaned object before it is applied (a drill's scratch rules)."""
        self.spec = spec
        self.results = results
        self.workdir = workdir
        self.labels = {LABEL_RESTORED_BY: label_value(restore)}
        self.filters = Filters(None, ["*"], [], spec.label_selector)
        self.simulation = Simulation()
        self.restored: dict[tuple[str, str | None, str], str] = {}  # (kind, ns, name) -> uid
        self.pending_owners: list[tuple[str, str | None, list[JSON]]] = []

    def ensure_namespaces(self, names: tuple[str, ...]) -> None:
        """Create target namespaces the backup holds no Namespace object for."""
        for ns in names:
            path = resource_path("", "v1", "namespaces", name=ns)
            if self.rest.get_or_none(path) is None:
                self.simulation.namespaces.add(ns)
                if not self.spec.dry_run:
                    body = namespace_body(ns, self.labels)
                    self.rest.apply(path, body, field_manager=FIELD_MANAGER)

    def restore(self, stage: str, planned: PlannedObject) -> None:
        entry = planned.entry
        if planned.skip is not None:
            reason, message = planned.skip
            self.results.add(planned, stage, "skipped", reason=reason, message=message)
            return
        try:
            obj = json.loads(read_confined(self.workdir, entry.path, trust.MAX_OBJECT_BYTES))
            trust.check_object(obj, entry.api_version, entry.kind, entry.namespace, entry.name)
        except (trust.Untrusted, ValueError) as err:
            reason = getattr(err, "reason", "ObjectInvalid")
            message = getattr(err, "message", str(err))
            self.results.add(planned, stage, "failed", reason=reason, message=message)
            return
        if not self.filters.wants_object(obj):
            return  # not selected by spec.labelSelector
        why = skip_reason(entry, obj)
        if why is not None:
            self.results.add(planned, stage, "skipped", reason=why[0], message=why[1])
            return
        self._apply(stage, planned, obj)

    def _apply(self, stage: str, planned: PlannedObject, obj: JSON) -> None:
        entry, target_ns = planned.entry, planned.target_namespace
        desired = clean(entry, obj, self.spec.namespace_mapping, self.labels)
        if self.transform is not None:
            desired = self.transform(entry, desired)
        name = desired["metadata"]["name"]
        renamed = {"targetName": name} if name != entry.name else {}
        path = resource_path(entry.group, entry.version, entry.plural, target_ns, name)
        try:
            existing = self.rest.get_or_none(path)
            if existing is not None and self.spec.existing_resource_policy == "skip":
                message = "exists; existingResourcePolicy is skip"
                self.results.add(
                    planned, stage, "skipped", reason="AlreadyExists", message=message, **renamed
                )
                return
            applied = self.rest.apply(
                path, desired, field_manager=FIELD_MANAGER, force=True, dry_run=self.spec.dry_run
            )
        except ApiError as err:
            self._not_applied(stage, planned, desired, err, renamed)
            return
        action = "create" if existing is None else "update"
        found = {"changes": diff_paths(desired, existing)} if existing is not None else {}
        if existing is not None and (kept := kept_paths(desired, existing)):
            found["kept"] = kept
        self.simulation.record(entry, desired)
        if self.spec.dry_run:
            self.results.add(planned, stage, action, dryRun=True, **found, **renamed)
            return
        self.results.add(planned, stage, action, **found, **renamed)
        self.restored[(entry.kind, target_ns, name)] = applied["metadata"]["uid"]
        refs = owner_references(obj)
        if refs:
            self.pending_owners.append((path, target_ns, refs))
        if entry.resource == CRD_RESOURCE:
            self._wait_established(path, name)

    def _not_applied(
        self, stage: str, planned: PlannedObject, desired: JSON, err: ApiError, extra: JSON
    ) -> None:
        """A refused object: in a dry run, one whose namespace or type this restore creates
        first counts as created (the server cannot check it yet); otherwise it failed, said
        plainly (a missing namespace or type, not a bare 404)."""
        entry, target_ns = planned.entry, planned.target_namespace
        if err.status != 404:
            reason = err.reason or "Rejected"
            self.results.add(planned, stage, "failed", reason=reason, message=err.message, **extra)
            return
        missing = self.simulation.missing(self.rest, entry, target_ns)
        if self.spec.dry_run and missing.created_earlier:
            self.simulation.record(entry, desired)
            note = {"validated": False, "note": missing.message}
            self.results.add(planned, stage, "create", dryRun=True, **note, **extra)
            return
        self.results.add(
            planned, stage, "failed", reason=missing.reason, message=missing.message, **extra
        )

    def _wait_established(self, path: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = self.rest.get_or_none(path) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            time.sleep(0.2)
        raise RunError("CRDNotEstablished", f"CustomResourceDefinition {name} not Established")

    def repoint_owners(self) -> None:
        """Owner references of restored objects point at the restored owners' new UIDs;
        references to owners that were not restored are dropped."""
        for path, ns, refs in self.pending_owners:
            kept = []
            for ref in refs:
                uid = self.restored.get((ref["kind"], ns, ref["name"]))
                if uid is not None:
                    kept.append({**ref, "uid": uid})
            if kept and not self.spec.dry_run:
                try:
                    self.rest.merge_patch(path, {"metadata": {"ownerReferences": kept}})
                except ApiError as err:
                    log.warning("could not restore owner references of %s: %s", path, err)
        self.pending_owners = []
