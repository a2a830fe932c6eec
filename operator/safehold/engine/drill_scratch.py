"""The scratch namespaces of restore drills: created owned by the operator (restricted Pod
Security, an isolating NetworkPolicy), removed after the drill, and swept when a drill is gone,
was kept past its keepOnFailure, or ended while the operator was down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from safehold.api.kinds import VERIFICATION
from safehold.api.verification import BackupVerificationStatus
from safehold.engine.errors import RunError
from safehold.kube.rest import ApiError, Rest
from safehold.planning.drills import (
    ANNOTATION_DRILL_UID,
    LABEL_DRILL,
    isolation_policy,
    scratch_namespace_body,
)
from safehold.planning.resource_types import resource_path
from safehold.planning.runs import TERMINAL

log = logging.getLogger(__name__)
REMOVAL_WAIT_SECONDS = 180.0


def _ns_path(name: str | None = None) -> str:
    return resource_path("", "v1", "namespaces", name=name)


def create_scratch(
    rest: Rest, name: str, namespace: str, drill: str, uid: str, source: str
) -> None:
    """Create one scratch namespace and its isolation policy; RunError when the name is taken
    by a namespace that is not this drill's."""
    existing = rest.get_or_none(_ns_path(name))
    if existing is not None and not _is_ours(existing, uid):
        raise RunError("ScratchNamespaceTaken", f"namespace {name} exists and is not this drill's")
    if existing is None:
        rest.create(_ns_path(), scratch_namespace_body(name, namespace, drill, uid, source))
    policy = isolation_policy(name)
    path = resource_path("networking.k8s.io", "v1", "networkpolicies", name)
    try:
        rest.create(path, policy)
    except ApiError as err:
        if err.status != 409:
            raise


def _is_ours(body: dict[str, object], uid: str) -> bool:
    meta = body.get("metadata")
    annotations = (meta.get("annotations") if isinstance(meta, dict) else None) or {}
    return isinstance(annotations, dict) and annotations.get(ANNOTATION_DRILL_UID) == uid


def remove_scratch(rest: Rest, names: Iterable[str], uid: str, wait: bool = True) -> bool:
    """Delete the drill's scratch namespaces (only those carrying its UID) and, with `wait`,
    wait until they are gone. Returns whether none is left."""
    pending = []
    for name in names:
        body = rest.get_or_none(_ns_path(name))
        if body is None:
            continue
        if not _is_ours(body, uid):
            log.warning("namespace %s is not drill %s's; left alone", name, uid)
            continue
        rest.delete_quietly(_ns_path(name), propagation="Foreground")
        pending.append(name)
    deadline = time.monotonic() + (REMOVAL_WAIT_SECONDS if wait else 0)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if rest.get_or_none(_ns_path(n)) is not None]
        if pending:
            time.sleep(1.0)
    return not pending


def sweep(rest: Rest, now: datetime | None = None) -> list[str]:
    """Remove scratch namespaces whose drill no longer needs them: the drill is gone, or it
    finished and is not kept (or kept past keepUntil). Returns the namespaces removed."""
    now = now or datetime.now(UTC)
    drills = {
        body["metadata"]["uid"]: BackupVerificationStatus.model_validate(body.get("status") or {})
        for page in rest.list_pages(VERIFICATION.path())
        for body in page
    }
    removed = []
    for page in rest.list_pages(_ns_path(), label_selector=LABEL_DRILL):
        for body in page:
            meta = body["metadata"]
            uid = (meta.get("annotations") or {}).get(ANNOTATION_DRILL_UID)
            if meta.get("deletionTimestamp") or not uid or _needed(drills.get(uid), now):
                continue
            rest.delete_quietly(_ns_path(meta["name"]), propagation="Foreground")
            removed.append(meta["name"])
    return removed


def _needed(status: BackupVerificationStatus | None, now: datetime) -> bool:
    if status is None:
        return False  # its drill was deleted
    if status.phase not in TERMINAL:
        return True  # running (or resumed after a restart): the drill removes it
    return status.keep_until is not None and status.keep_until > now
