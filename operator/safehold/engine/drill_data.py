"""The checks of a drill that read stored data: the repository check of the repositories the
backup lives in (a rotating subset of the pack files), and the database checks (each dumped
target restored into scratch databases, compared and probed, then dropped)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from safehold.api.errors import Failure
from safehold.api.kinds import VERIFICATION
from safehold.api.verification import BackupVerificationStatus, CheckStatus
from safehold.engine.database_checks import check_database_target, drop_scratch_databases
from safehold.engine.drill_checks import skipped
from safehold.engine.movers import MoverLauncher
from safehold.engine.repository_check import check_repositories
from safehold.engine.restore import Source, database_targets
from safehold.planning import drills
from safehold.storage.catalog import BackupManifest

if TYPE_CHECKING:
    from safehold.engine.drill import DrillRun

log = logging.getLogger(__name__)


class DrillData:
    def __init__(self, run: DrillRun, source: Source, mapping: Mapping[str, str]) -> None:
        self.run = run
        self.source = source
        self.mapping = mapping

    def repository_check(self) -> list[CheckStatus]:
        run, manifest = self.run, self.source.manifest
        if not run.spec.checks.repository:
            return [skipped("repository", "NotRequested", "checks.repository is false")]
        layout = self.source.location.s3.layout
        keys = {layout.repository(run.namespace)}
        keys |= {v.repository for v in manifest.volumes if v.repository}
        subset = drills.data_subset(_previous_subset(run), run.spec.checks.read_data_runs)
        run.status.data_subset = f"{subset[0]}/{subset[1]}"
        run._say(f"checking {len(keys)} repository(ies), data subset {run.status.data_subset}")
        limit = max(run.deadline - time.monotonic(), 60.0)
        found = check_repositories(self.source.location, sorted(keys), subset, timeout=limit)
        reason = found.reason
        if reason == "RepositoryDamaged" and not drills.touches(
            found.damaged_snapshots, _snapshots_of(manifest)
        ):
            reason = "OtherBackupsDamaged"  # the repository is, this backup's data is not
        return [
            CheckStatus(
                name="repository",
                result="Passed" if found.passed else "Failed",
                reason=None if found.passed else reason,
                message=found.message,
                duration_seconds=round(found.duration_seconds, 3),
            )
        ]

    def _launcher(self) -> MoverLauncher:
        run = self.run
        return MoverLauncher(
            run.clients, run.gateway, self.source.location, run.namespace, run.name
        )

    def database_checks(self) -> list[CheckStatus]:
        run, manifest = self.run, self.source.manifest
        dumped = [d for d in manifest.databases if d.result == "Succeeded"]
        if not dumped:
            return []
        settings = run.spec.checks.databases
        if not settings.enabled:
            return [
                skipped(f"database:{d.target}", "NotRequested", "checks.databases.enabled is false")
                for d in dumped
            ]
        targets = {t.name: t for t in database_targets(run.clients, run.namespace, self.source)}
        overrides = {c.target: c for c in settings.targets}
        suffix = drills.scratch_suffix(run.uid)
        checks = []
        for result in dumped:
            run._say(f"checking database target {result.target}")
            started = time.monotonic()
            check = check_database_target(
                self._launcher(),
                run.namespace,
                result,
                targets.get(result.target),
                overrides.get(result.target),
                suffix,
                self._created,
                self._dropped,
                on_status=run._say,
            )
            if check.duration_seconds is None:
                check.duration_seconds = round(time.monotonic() - started, 3)
            checks.append(check)
        return checks

    def _created(self, names: list[str]) -> None:
        """Scratch databases about to be created: recorded before they exist."""
        status = self.run.status
        status.scratch_databases = sorted(set(status.scratch_databases) | set(names))
        self.run._write()

    def _dropped(self, names: list[str]) -> None:
        status = self.run.status
        status.scratch_databases = sorted(set(status.scratch_databases) - set(names))
        self.run._write()

    @staticmethod
    def drop_leftovers(run: DrillRun) -> list[str]:
        """Drop the scratch databases an interrupted attempt recorded (as target/database);
        returns those still there."""
        leftovers = list(run.status.scratch_databases)
        if not leftovers:
            return []
        try:
            source = _source_of(run)
        except Exception as err:
            log.warning("drill %s/%s: cannot drop leftovers: %s", run.namespace, run.name, err)
            return leftovers
        data = DrillData(run, source, {})
        targets = {t.name: t for t in database_targets(run.clients, run.namespace, source)}
        overrides = {c.target: c for c in run.spec.checks.databases.targets}
        left: list[str] = []
        for dumped in source.manifest.databases:
            mine = [e for e in leftovers if e.partition("/")[0] == dumped.target]
            if not mine:
                continue
            try:
                left += drop_scratch_databases(
                    data._launcher(),
                    run.namespace,
                    dumped,
                    targets.get(dumped.target),
                    overrides.get(dumped.target),
                    mine,
                )
            except Failure as err:  # still recorded: the next attempt tries again
                log.warning("drill %s/%s: %s", run.namespace, run.name, err.message)
                left += mine
        return left


def _snapshots_of(manifest: BackupManifest) -> set[str]:
    ids = {v.snapshot_id for v in manifest.volumes if v.snapshot_id}
    ids |= {s for d in manifest.databases for s in d.snapshots}
    if manifest.resources is not None and manifest.resources.snapshot_id:
        ids.add(manifest.resources.snapshot_id)
    return ids


def _source_of(run: DrillRun) -> Source:
    from safehold.engine.restore import read_source, resolve_backup

    name, status = resolve_backup(run.clients, run.namespace, run.status.backup, None)
    return read_source(run.clients, run.namespace, name, status)


def _previous_subset(run: DrillRun) -> str | None:
    """The data subset the newest earlier drill of the same policy (or backup) read."""
    newest: tuple[str, str] | None = None
    for page in run.clients.rest.list_pages(VERIFICATION.path(run.namespace)):
        for body in page:
            if body["metadata"]["uid"] == run.uid:
                continue
            status = BackupVerificationStatus.model_validate(body.get("status") or {})
            same = (status.policy and status.policy == run.status.policy) or (
                not run.status.policy and status.backup == run.status.backup
            )
            if not same or not status.data_subset or status.start_time is None:
                continue
            stamp = status.start_time.isoformat()
            if newest is None or stamp > newest[0]:
                newest = (stamp, status.data_subset)
    return newest[1] if newest else None
