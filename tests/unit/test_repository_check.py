"""Repository checks: what restic 0.19 prints, read back; verdicts over several repositories."""

from __future__ import annotations

from safehold.engine.repository_check import (
    CHECK_PASSED,
    REPOSITORY_DAMAGED,
    RepositoryFindings,
    summarize,
)
from safehold.storage import restic

# `restic repair snapshots --dry-run` of restic 0.19 after `repair index` dropped a lost pack.
DRY_RUN = """
snapshot 7e44aa2b of [/tmp/rtest/d1] at 2026-12-02 06:24:15.182000737 +0000 UTC by root@vm

snapshot 83543def of [/tmp/rtest/d2] at 2026-12-02 06:24:15.912495804 +0000 UTC by root@vm
  file "/d2/b": removed missing content
would save new snapshot

snapshot 9a0c1b2d of [/data] at 2026-12-02 06:25:15.912495804 +0000 UTC by root@vm
  dir "/": not readable
would delete empty snapshot

would modify 2 snapshots
"""


def test_repair_dry_run_names_the_affected_snapshots_only() -> None:
    assert restic.parse_repair_dry_run(DRY_RUN) == ["83543def", "9a0c1b2d"]
    assert restic.parse_repair_dry_run("\nno snapshots would be modified\n") == []


def _findings(
    key: str, damaged: bool, snapshots: frozenset[str] = frozenset()
) -> RepositoryFindings:
    errors = ("pack 1a8a916f: does not exist",) if damaged else ()
    return RepositoryFindings(key, restic.CheckReport(damaged, errors), frozenset(snapshots))


def test_summary_passes_when_every_repository_passes() -> None:
    result = summarize([_findings("repositories/a", False), _findings("repositories/b", False)], 2)
    assert result.passed
    assert result.reason == CHECK_PASSED
    assert "repositories/a, repositories/b" in result.message
    assert result.damaged_snapshots == frozenset()


def test_damage_wins_and_names_repository_and_snapshots() -> None:
    failure = restic.ResticError("EndpointUnreachable", "dial tcp: connection refused")
    findings = [
        RepositoryFindings("repositories/a", restic.CheckReport(False, failure=failure)),
        _findings("repositories/b", True, frozenset({"83543defbc94bc9c", "7e44aa2b"})),
    ]
    result = summarize(findings, 1)
    assert not result.passed
    assert result.reason == REPOSITORY_DAMAGED
    assert result.damaged_snapshots == {"83543defbc94bc9c", "7e44aa2b"}
    assert result.message.startswith("repository repositories/b is damaged: pack 1a8a916f")
    assert "affected snapshots: 7e44aa2b, 83543def" in result.message
    assert "repository repositories/a: dial tcp" in result.message


def test_a_repository_that_could_not_be_checked_fails_with_restics_reason() -> None:
    failure = restic.ResticError("RepositoryTimeout", "restic check did not finish in 60s")
    result = summarize(
        [RepositoryFindings("repositories/a", restic.CheckReport(False, failure=failure))], 60
    )
    assert not result.passed
    assert result.reason == "RepositoryTimeout"
