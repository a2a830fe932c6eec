"""Repository integrity checks: `restic check` of a location's repositories, and which
snapshots a damaged repository can no longer restore.

`check_repositories` is read-only (no lock, no repair): restore drills and ReadOnly locations
use it as is. The scheduled check of a location (engine/repository_checks) also repairs the
index of a damaged repository with `repair_repository`, so that the next backup uploads the
lost data again.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from safehold.engine.settings import restic_cache_dir, scratch_dir
from safehold.storage import restic
from safehold.storage.location import ResolvedLocation

log = logging.getLogger(__name__)
CHECK_PASSED = "CheckPassed"
REPOSITORY_DAMAGED = "RepositoryDamaged"
ERRORS_SHOWN = 3


@dataclass(frozen=True)
class RepositoryFindings:
    """What the check found in one repository."""

    key: str
    """The repository's key below the location's prefix (repositories/<namespace>, ...)."""
    report: restic.CheckReport
    """restic check's own report."""
    damaged_snapshots: frozenset[str] = frozenset()
    """Snapshots (full or short ids) whose data is missing or damaged."""

    @property
    def damaged(self) -> bool:
        return self.report.damaged

    def describe(self) -> str:
        """One human sentence: the repository and what restic found (never a secret)."""
        if self.report.failure is not None:
            return f"repository {self.key}: {self.report.failure.message}"
        if not self.damaged:
            return f"repository {self.key}: no errors"
        found = "; ".join(self.report.errors[:ERRORS_SHOWN]) or "errors"
        more = len(self.report.errors) - ERRORS_SHOWN
        if more > 0:
            found += f" (and {more} more)"
        snaps = ", ".join(sorted(s[:8] for s in self.damaged_snapshots)) or "none identified"
        return f"repository {self.key} is damaged: {found}; affected snapshots: {snaps}"


@dataclass(frozen=True)
class RepositoryCheckResult:
    """The verdict of checking one or more repositories of a location."""

    passed: bool
    reason: str
    """CheckPassed, RepositoryDamaged, RepositoryTimeout, or why restic could not check
    (RepositoryNotFound, RepositoryPasswordWrong, EndpointUnreachable, RepositoryError)."""
    message: str
    """Names each repository that failed and what restic found."""
    damaged_snapshots: frozenset[str]
    """Full or short ids of the snapshots whose data is missing or damaged."""
    duration_seconds: float
    findings: tuple[RepositoryFindings, ...] = ()
    """Per repository, in the order checked."""


def check_repository(
    location: ResolvedLocation,
    key: str,
    subset: tuple[int, int] | None,
    *,
    timeout: float = 6 * 3600,
) -> RepositoryFindings:
    """Check one repository (read-only) and, when it is damaged, find its damaged snapshots:
    those referencing the packs restic named (through the index, which still describes lost
    packs) and those referencing blobs the index no longer holds (after a repair). Damage
    counts only when a second check finds it too."""
    repo = location.repository_at(key, restic_cache_dir())
    report = restic.check(repo, subset, timeout=timeout)
    if report.damaged:
        # Without a lock, a snapshot forgotten or a pack pruned (by another cluster or by
        # hand) during the check looks like damage: only what a second check finds counts.
        report = restic.check(repo, subset, timeout=timeout)
    if not report.damaged:
        return RepositoryFindings(key, report)
    packs = sorted(report.missing_packs | report.damaged_packs)
    snapshots = set(restic.snapshots_of_packs(repo, packs, timeout=timeout))
    try:
        snapshots |= restic.snapshots_missing_data(repo, timeout=timeout)
    except restic.ResticError as err:  # the damage stands; only the mapping is partial
        log.warning("repository %s: damaged snapshots not all identified: %s", key, err.message)
    return RepositoryFindings(key, report, frozenset(snapshots))


def check_repositories(
    location: ResolvedLocation,
    keys: Sequence[str],
    subset: tuple[int, int] | None,
    *,
    timeout: float = 6 * 3600,
) -> RepositoryCheckResult:
    """`restic check` (with `--read-data-subset=k/N` when `subset` is (k, N)) of every
    repository in `keys` (below the location's prefix, e.g. `location.s3.layout.repository
    (namespace)`; `engine.maintenance.repositories_of` lists a namespace's). Read-only: takes
    no lock and repairs nothing. Damage is reported as RepositoryDamaged with the snapshots
    affected; a repository restic could not check at all fails with restic's reason."""
    start = time.monotonic()
    findings: list[RepositoryFindings] = []
    for key in keys:
        try:
            findings.append(check_repository(location, key, subset, timeout=timeout))
        except restic.ResticError as err:  # a timeout, or the mapping failed
            findings.append(RepositoryFindings(key, restic.CheckReport(False, failure=err)))
    return summarize(findings, time.monotonic() - start)


def summarize(findings: Sequence[RepositoryFindings], duration: float) -> RepositoryCheckResult:
    """The verdict over several repositories: damage first, then the first failure."""
    damaged = [f for f in findings if f.damaged]
    failed = [f for f in findings if f.report.failure is not None]
    snapshots = frozenset(s for f in damaged for s in f.damaged_snapshots)
    if damaged or failed:
        failure = failed[0].report.failure if failed else None
        reason = REPOSITORY_DAMAGED if damaged or failure is None else failure.reason
        message = "; ".join(f.describe() for f in [*damaged, *failed])
        return RepositoryCheckResult(False, reason, message, snapshots, duration, tuple(findings))
    names = ", ".join(f.key for f in findings) or "no repositories"
    message = f"restic check found no errors in {names}"
    return RepositoryCheckResult(True, CHECK_PASSED, message, snapshots, duration, tuple(findings))


def repair_repository(location: ResolvedLocation, findings: RepositoryFindings) -> None:
    """Make a damaged repository consistent again for new backups: damaged packs are
    salvaged and removed (`restic repair packs`), and the index is rebuilt from the packs
    that exist (`restic repair index`), so that the next backup of the same data uploads
    it again. Snapshots are left as they are: the Backups that reference them are marked
    Corrupt, and become whole again once the missing data has been uploaded again.
    Needs a ReadWrite location (exclusive lock)."""
    if not location.writable:
        raise restic.ResticError("LocationReadOnly", "a ReadOnly location is never repaired")
    repo = location.repository_at(findings.key, restic_cache_dir())
    if findings.report.damaged_packs:
        with tempfile.TemporaryDirectory(dir=scratch_dir()) as workdir:
            restic.repair_packs(repo, sorted(findings.report.damaged_packs), workdir)
    restic.repair_index(repo)
