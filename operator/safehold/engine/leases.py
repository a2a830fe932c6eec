"""One runner per run: a coordination.k8s.io Lease per Backup or RestoreRequest, in the
operator's namespace, held by the operator replica that runs it and renewed while it runs.

Kopf peering keeps one replica active, but a replica that loses its turn (a peer with a higher
priority appears) keeps its runs going, and a replica that takes over resumes every unfinished
run. The lease makes sure no run is executed twice at once: a replica runs an object only
while it holds the object's lease, and takes a lease over only once it expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from safehold.api.base import JSON
from safehold.api.labels import LABEL_COMPONENT
from safehold.engine.settings import operator_namespace
from safehold.kube.rest import ApiError, Rest
from safehold.planning.resource_types import resource_path

log = logging.getLogger(__name__)
LEASE_SECONDS = 60
RENEW_SECONDS = 20.0
# The replica: its pod's name. A restarted container of the same pod takes its own leases
# back at once; another pod waits until they expired.
IDENTITY = os.environ.get("HOSTNAME") or "operator"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _lease_path(name: str | None = None) -> str:
    return resource_path("coordination.k8s.io", "v1", "leases", operator_namespace(), name)


def _body(name: str, now: datetime, resource_version: str | None = None) -> JSON:
    meta: JSON = {"name": name, "labels": {LABEL_COMPONENT: "run-lease"}}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": IDENTITY,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": _time(now),
            "renewTime": _time(now),
        },
    }


def _expired(lease: JSON, now: datetime) -> bool:
    spec = lease.get("spec") or {}
    renewed = _parse(spec.get("renewTime"))
    duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS))
    return renewed is None or renewed + duration < now


def acquire(rest: Rest, name: str) -> bool:
    """Take the lease when it is free, expired or ours; False when another replica holds it."""
    now = datetime.now(UTC)
    current = rest.get_or_none(_lease_path(name))
    try:
        if current is None:
            rest.create(_lease_path(), _body(name, now))
            return True
        holder = (current.get("spec") or {}).get("holderIdentity")
        if holder != IDENTITY and not _expired(current, now):
            return False
        version = current["metadata"]["resourceVersion"]
        rest.request("PUT", _lease_path(name), body=_body(name, now, version))
        return True
    except ApiError as err:
        if err.status == 409:  # another replica was quicker
            return False
        raise


def _renew(rest: Rest, name: str, stop: threading.Event) -> None:
    while not stop.wait(RENEW_SECONDS):
        try:
            current = rest.get(_lease_path(name))
            if (current.get("spec") or {}).get("holderIdentity") != IDENTITY:
                log.warning("run lease %s was taken over", name)
                return
            current["spec"]["renewTime"] = _time(datetime.now(UTC))
            rest.request("PUT", _lease_path(name), body=current)
        except ApiError as err:
            log.warning("could not renew run lease %s: %s", name, err)


@contextlib.contextmanager
def held(rest: Rest, uid: str) -> Iterator[bool]:
    """The run lease of object `uid` for the block (renewed meanwhile, released after); yields
    False, and holds nothing, when another replica has it."""
    name = f"safehold-run-{uid}"
    if not acquire(rest, name):
        yield False
        return
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(rest, name, stop), daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join(5)
        with contextlib.suppress(ApiError):
            current = rest.get_or_none(_lease_path(name)) or {}
            if (current.get("spec") or {}).get("holderIdentity") == IDENTITY:
                rest.delete_quietly(_lease_path(name))
