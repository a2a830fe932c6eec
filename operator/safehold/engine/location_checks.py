"""The scheduled repository check of each BackupStorageLocation (spec.repositoryCheck).

Run from the scheduling loop in a background thread, one interval after the last check,
never while a prune of the location or a backup to it runs, at most MAX_RUNNING at a time.
A check reads the next part of the pack files (subset rotation, counted in status). When it
finds data missing or damaged: the Backups whose snapshots lost data are marked Corrupt
(status and catalog, engine/verdicts), the index is repaired (ReadWrite locations only) so
that the next backup of the same data uploads it again, and the location's Degraded
condition, an Event and the metrics say so. A later check that finds the repository whole
again lifts the Corrupt verdicts it gave and turns Degraded False.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from safehold.api.backup import BackupStatus
from safehold.api.base import JSON
from safehold.api.errors import Failure
from safehold.api.kinds import BACKUP, LOCATION
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.api.verification import BackupVerificationState
from safehold.engine.deletion import snapshots_by_repository
from safehold.engine.locations import load_location, update_status
from safehold.engine.maintenance import LocationWork, busy_locations, repositories_of
from safehold.engine.metrics import (
    CORRUPT_BACKUPS,
    LOCATION_DEGRADED,
    REPOSITORY_CHECK_LAST_PASSED,
    REPOSITORY_CHECKS,
)
from safehold.engine.repository_check import (
    REPOSITORY_DAMAGED,
    RepositoryCheckResult,
    check_repositories,
    repair_repository,
)
from safehold.engine.verdicts import record_verdict
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.planning.conditions import changed
from safehold.planning.locations import location_problem
from safehold.planning.meta import parse_time
from safehold.planning.policy import BackupView
from safehold.planning.repository_checks import (
    DEGRADED,
    CheckOutcome,
    affected_backups,
    check_due,
    names,
    read_data_subset,
    status_after_check,
)
from safehold.storage import restic
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

log = logging.getLogger(__name__)
WORK = "repository-check"
MAX_RUNNING = 2
CHECK_TIMEOUT_SECONDS = 6 * 3600.0


def existing_repositories(location: ResolvedLocation, namespace: str) -> list[str]:
    """Keys of the namespace's repositories in the location that exist (have a `config`)."""
    client, layout = make_client(location.s3), location.s3.layout
    found = []
    for key in repositories_of(location, namespace):
        try:
            client.head_object(Bucket=layout.bucket, Key=layout.key(key, "config"))
        except ClientError as err:
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                continue
            raise
        found.append(key)
    return found


def location_backups(clients: Clients, namespace: str, name: str) -> list[JSON]:
    """The finished Backups written to the location."""
    return [
        body
        for page in clients.rest.list_pages(BACKUP.path(namespace))
        for body in page
        if (body.get("status") or {}).get("storageLocation") == name
        and BackupView.of(body).finished
    ]


def _corrupt(body: JSON, *, by_check: bool = False) -> bool:
    """Whether the Backup is Corrupt (with `by_check`: by a repository check's verdict, which
    names no drill)."""
    verdict = (body.get("status") or {}).get("verification") or {}
    if verdict.get("result") != "Corrupt":
        return False
    return not (by_check and verdict.get("verification"))


def mark_corrupt(
    clients: Clients, location: ResolvedLocation, result: RepositoryCheckResult
) -> list[str]:
    """Mark Corrupt every Backup of the location referencing a damaged snapshot; returns
    their names. A Backup already Corrupt is left as it is."""
    namespace, where = location.namespace, f"{location.namespace}/{location.name}"
    bodies = {b["metadata"]["name"]: b for b in location_backups(clients, *_key(location))}
    owned = {
        name: snapshots_by_repository(
            None, BackupStatus.model_validate(b.get("status") or {}), namespace
        )
        for name, b in bodies.items()
    }
    damaged = {f.key: f.damaged_snapshots for f in result.findings if f.damaged}
    affected = affected_backups(owned, damaged)
    now = datetime.now(UTC)
    for name, snapshots in affected.items():
        if _corrupt(bodies[name]):
            continue  # a drill's Corrupt verdict stays the drill's, to be lifted by a drill
        message = (
            f"the repository check of BackupStorageLocation {where} found data of snapshot(s) "
            f"{', '.join(snapshots)} missing or damaged: {result.message}"
        )
        state = BackupVerificationState(result="Corrupt", time=now, message=message[:4000])
        if record_verdict(clients, location, namespace, name, state):
            _backup_event(clients, bodies[name], "Warning", "Corrupt", state.message)
    return list(affected)


def clear_corrupt(clients: Clients, location: ResolvedLocation) -> list[str]:
    """Lift the Corrupt verdicts the repository check gave, now that a check found every
    repository of the location whole (a later backup uploaded the lost data again)."""
    cleared = []
    now = datetime.now(UTC)
    where = f"{location.namespace}/{location.name}"
    for body in location_backups(clients, *_key(location)):
        if not _corrupt(body, by_check=True):
            continue
        name = body["metadata"]["name"]
        message = (
            f"the repository check of BackupStorageLocation {where} found every snapshot "
            "whole again (the data it had lost was uploaded again by a later backup); this "
            "is the repository check's verdict, not a restore drill's"
        )
        state = BackupVerificationState(result="Verified", time=now, message=message)
        if record_verdict(clients, location, location.namespace, name, state, clears_corrupt=True):
            _backup_event(clients, body, "Normal", "CorruptionRepaired", message)
            cleared.append(name)
    return cleared


def _key(location: ResolvedLocation) -> tuple[str, str]:
    return location.namespace, location.name


def repair(location: ResolvedLocation, result: RepositoryCheckResult) -> str | None:
    """Repair every damaged repository of a ReadWrite location whose index still names
    lost or damaged packs (once repaired, a check finds only blobs missing from the index
    until a backup uploads them again); why a repair failed, or None."""
    needed = [f for f in result.findings if f.report.missing_packs or f.report.damaged_packs]
    for findings in needed:
        try:
            with restic.maintenance_lock(location.repository(location.namespace)):
                repair_repository(location, findings)
        except restic.ResticError as err:
            log.warning("repair of %s failed: %s", findings.key, err.message)
            return f"repository {findings.key}: {err.message}"
    return None


def judge(
    clients: Clients,
    location: ResolvedLocation,
    result: RepositoryCheckResult,
    subset: tuple[int, int] | None,
) -> CheckOutcome:
    """Act on a check's result: Corrupt verdicts and repairs, or lifted verdicts."""
    seconds = result.duration_seconds
    if result.passed:
        cleared = clear_corrupt(clients, location)
        if cleared:
            log.info("repository check lifted Corrupt from %s", names(cleared))
        return CheckOutcome("Passed", result.reason, result.message, seconds, subset)
    if result.reason != REPOSITORY_DAMAGED:
        return CheckOutcome("Failed", result.reason, result.message, seconds, subset)
    corrupt = mark_corrupt(clients, location, result)
    problem = repair(location, result) if location.writable else None
    return CheckOutcome(
        "Damaged",
        result.reason,
        result.message,
        seconds,
        subset,
        corrupt=corrupt,
        repaired=location.writable and problem is None,
        repair_error=problem,
    )


def run_check(
    clients: Clients, namespace: str, name: str, subset: tuple[int, int] | None
) -> CheckOutcome:
    """Check the location's repositories now, act on the result and write its status."""
    started = time.monotonic()
    read_only = False
    try:
        location = load_location(clients, namespace, name, need_write=False)
        read_only = not location.writable
        keys = existing_repositories(location, namespace)
        result = check_repositories(location, keys, subset, timeout=CHECK_TIMEOUT_SECONDS)
        outcome = judge(clients, location, result, subset)
    except Failure as err:
        outcome = CheckOutcome("Failed", err.reason, err.message, 0.0, subset)
    except (ClientError, BotoCoreError) as err:
        message = f"the object store did not answer: {type(err).__name__}: {err}"
        outcome = CheckOutcome("Failed", "EndpointUnreachable", message, 0.0, subset)
    if outcome.result == "Failed":
        outcome = dataclasses.replace(outcome, duration_seconds=time.monotonic() - started)
    _write(clients, namespace, name, outcome, read_only)
    return outcome


def _write(
    clients: Clients, namespace: str, name: str, outcome: CheckOutcome, read_only: bool
) -> None:
    now = datetime.now(UTC)

    def change(body: JSON, before: BackupStorageLocationStatus) -> BackupStorageLocationStatus:
        generation = body["metadata"].get("generation")
        return status_after_check(before, outcome, generation, now, read_only=read_only)

    written = update_status(clients, namespace, name, change)
    REPOSITORY_CHECKS.labels(namespace, name, outcome.result).inc()
    if outcome.result != "Failed":
        LOCATION_DEGRADED.labels(namespace, name).set(1 if outcome.result == "Damaged" else 0)
        CORRUPT_BACKUPS.labels(namespace, name).set(len(outcome.corrupt))
    if outcome.result == "Passed":
        REPOSITORY_CHECK_LAST_PASSED.labels(namespace, name).set(now.timestamp())
    if written is None:
        return
    body, before, after = written
    log.info("repository check of %s/%s: %s (%s)", namespace, name, outcome.result, outcome.reason)
    if changed(before.conditions, after.conditions, DEGRADED):
        degraded = next(c for c in after.conditions if c.type == DEGRADED)
        kind = "Warning" if degraded.status == "True" else "Normal"
        _location_event(clients, body, kind, degraded.reason, degraded.message)
    previous = before.repository_check
    repeated = previous is not None and (previous.result, previous.reason) == (
        "Failed",
        outcome.reason,
    )
    if outcome.result == "Failed" and not repeated:
        _location_event(clients, body, "Warning", "RepositoryCheckFailed", outcome.message)


def _location_event(clients: Clients, body: JSON, kind: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    post_event(
        clients.core,
        LOCATION.kind,
        meta["namespace"],
        meta["name"],
        meta.get("uid"),
        "Warning" if kind == "Warning" else "Normal",
        reason,
        message,
    )


def _backup_event(clients: Clients, body: JSON, kind: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    post_event(
        clients.core,
        BACKUP.kind,
        meta["namespace"],
        meta["name"],
        meta.get("uid"),
        "Warning" if kind == "Warning" else "Normal",
        reason,
        message,
    )


class LocationChecks:
    """Starts the due repository checks of locations in background threads."""

    def __init__(self, clients: Clients, work: LocationWork) -> None:
        self.clients = clients
        self.work = work
        self._started: dict[str, datetime] = {}

    def check_due(
        self,
        locations: Mapping[tuple[str, str], JSON],
        backups: Sequence[BackupView],
        now: datetime,
    ) -> list[str]:
        """Start the checks that are due; returns the locations (namespace/name) started."""
        busy = busy_locations(backups)
        started = []
        for (namespace, name), body in sorted(locations.items()):
            key = f"{namespace}/{name}"
            if self.work.running(WORK) >= MAX_RUNNING:
                break
            if not self._due(body, now) or (namespace, name) in busy or (namespace, None) in busy:
                continue
            if not self.work.begin(key, WORK):
                continue  # a prune (or this check) runs on it
            self._started[key] = now
            started.append(key)
            threading.Thread(
                target=self._run,
                args=(namespace, name, _subset(body)),
                name=f"check-{key}",
                daemon=True,
            ).start()
        return started

    def _due(self, body: JSON, now: datetime) -> bool:
        """Whether the location's check is due now."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp") or location_problem(body) is not None:
            return False
        try:
            spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
            status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
        except ValidationError:
            return False
        if not check_due(spec, status, parse_time(meta.get("creationTimestamp")), now):
            return False
        # Started here less than an interval ago, and its status never got written?
        last = self._started.get(f"{meta['namespace']}/{meta['name']}")
        return last is None or check_due(spec, BackupStorageLocationStatus(), last, now)

    def _run(self, namespace: str, name: str, subset: tuple[int, int] | None) -> None:
        key = f"{namespace}/{name}"
        try:
            run_check(self.clients, namespace, name, subset)
        except Exception:
            REPOSITORY_CHECKS.labels(namespace, name, "Failed").inc()
            log.exception("repository check of %s failed", key)
        finally:
            self.work.end(key)


def _subset(body: JSON) -> tuple[int, int] | None:
    """The part of the pack files the location's next check reads."""
    spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
    status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
    runs = status.repository_check.runs if status.repository_check else 0
    return read_data_subset(runs, spec.repository_check.read_data_runs)
