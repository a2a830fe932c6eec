"""Repository checks: what restic 0.19 prints, read back; verdicts over several repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.api.location import (
    BackupStorageLocationSpec,
    BackupStorageLocationStatus,
    RepositoryCheckStatus,
)
from safehold.engine.repository_check import (
    CHECK_PASSED,
    REPOSITORY_DAMAGED,
    RepositoryFindings,
    summarize,
)
from safehold.planning import repository_checks as rc
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


# ---- the scheduled check (planning/repository_checks.py) ----------------------------------
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _spec(**check: object) -> BackupStorageLocationSpec:
    return BackupStorageLocationSpec.model_validate(
        {
            "bucket": "bucket-1",
            "credentialsSecret": {"name": "s3"},
            "repositoryPasswordSecret": {"name": "pw"},
            "repositoryCheck": check,
        }
    )


def test_subsets_rotate_so_that_n_checks_read_every_pack_once() -> None:
    assert [rc.read_data_subset(r, 3) for r in range(7)] == [
        (1, 3),
        (2, 3),
        (3, 3),
        (1, 3),
        (2, 3),
        (3, 3),
        (1, 3),
    ]
    assert rc.read_data_subset(5, 1) == (1, 1)
    assert rc.read_data_subset(5, 0) is None  # structure only


def test_a_check_is_due_one_interval_after_the_last_or_the_creation() -> None:
    spec, never = _spec(interval="1h"), BackupStorageLocationStatus()
    assert not rc.check_due(spec, never, NOW - timedelta(minutes=59), NOW)
    assert rc.check_due(spec, never, NOW - timedelta(hours=1), NOW)
    checked = BackupStorageLocationStatus(
        repository_check=RepositoryCheckStatus(last_check_time=NOW - timedelta(minutes=30))
    )
    assert not rc.check_due(spec, checked, NOW - timedelta(days=9), NOW)
    assert not rc.check_due(_spec(enabled=False), never, NOW - timedelta(days=9), NOW)
    # A check that could not run is retried after at most an hour.
    failed = BackupStorageLocationStatus(
        repository_check=RepositoryCheckStatus(
            last_check_time=NOW - timedelta(hours=1), result="Failed"
        )
    )
    assert rc.check_due(_spec(interval="24h"), failed, None, NOW)


def test_damaged_snapshots_map_to_the_backups_that_reference_them() -> None:
    full = "83543defbc94bc9ca8a86a3caec9057250a535926819bcb56fb573acab50479e"
    owned = {
        "b1": {
            "repositories/ns": {"7e44aa2b8cd5162b3f89822150298ed3bb9c9bd8eba72d8dc6d3dee32cf3e8ae"}
        },
        "b2": {"repositories/ns": {"11111111aaaa"}, "namespace-repositories/ns/app": {full}},
        "b3": {"repositories/ns": {full}},  # same id, other repository: not affected
    }
    damaged = {"namespace-repositories/ns/app": frozenset({"83543def"})}
    assert rc.affected_backups(owned, damaged) == {"b2": ["83543def"]}
    assert rc.affected_backups(owned, {"repositories/ns": frozenset({full})}) == {
        "b3": ["83543def"]
    }
    assert not rc.same_snapshot("8354", full)  # too short to name a snapshot


def _outcome(result: str, **extra: object) -> rc.CheckOutcome:
    return rc.CheckOutcome(
        result, extra.pop("reason", "CheckPassed"), "found", 1.5, (2, 10), **extra
    )  # type: ignore[arg-type]


def test_status_after_checks_degraded_and_back() -> None:
    start = BackupStorageLocationStatus()
    damaged = rc.status_after_check(
        start,
        _outcome("Damaged", reason="RepositoryDamaged", corrupt=["b1"], repaired=True),
        3,
        NOW,
    )
    [degraded] = [c for c in damaged.conditions if c.type == "Degraded"]
    assert (degraded.status, degraded.reason) == ("True", "RepositoryDamaged")
    assert "Backups marked Corrupt: b1" in degraded.message
    assert "the next backup of the same data uploads it again" in degraded.message
    check = damaged.repository_check
    assert check is not None
    assert (check.result, check.runs, check.read_data_subset) == ("Damaged", 1, "2/10")
    assert check.corrupt_backups == ["b1"]
    assert check.last_passed_time is None

    failed = rc.status_after_check(
        damaged, _outcome("Failed", reason="EndpointUnreachable"), 3, NOW
    )
    assert failed.conditions == damaged.conditions  # a check that could not run says nothing
    assert failed.repository_check is not None
    assert failed.repository_check.runs == 1  # and its subset is read next time

    later = NOW + timedelta(hours=1)
    passed = rc.status_after_check(failed, _outcome("Passed"), 3, later)
    [degraded] = [c for c in passed.conditions if c.type == "Degraded"]
    assert (degraded.status, degraded.reason) == ("False", "CheckPassed")
    assert passed.repository_check is not None
    assert passed.repository_check.runs == 2
    assert passed.repository_check.last_passed_time == later


def test_a_read_only_location_says_it_was_not_repaired() -> None:
    outcome = _outcome("Damaged", reason="RepositoryDamaged")
    message = rc.degraded_message(outcome, read_only=True)
    assert "No Backup references the damaged snapshots" in message
    assert "ReadOnly: the repository was not repaired" in message


def test_files_restic_stores_again_are_not_unreadable() -> None:
    """After `repair index` dropped a lost pack, restic 0.19 says of each unchanged file whose
    data is gone that it stores it again, and exits 3: the snapshot is whole all the same."""
    import io

    lines = [
        b'{"message_type":"error","error":{"message":"/data/b: parts of data/b not found in the '
        b'repository index; storing the file again"},"during":"archival","item":"/data/b"}\n',
        b'{"message_type":"error","error":{"message":"open /data/k: permission denied"},'
        b'"during":"archival","item":"/data/k"}\n',
        b'{"message_type":"exit_error","code":3,"message":"Warning: at least one source file '
        b'could not be read"}\n',
    ]
    errors = restic._BackupErrors(io.BytesIO(b"".join(lines)))
    errors.stderr()
    assert errors.count == 1
    assert [u.path for u in errors.first] == ["/data/k"]


# ---- Corrupt verdicts elsewhere: catalog sync, explicit restores -------------------------
def _verdict(result: str, hour: int, **extra: object) -> dict[str, object]:
    return {"result": result, "time": f"2026-03-01T{hour:02d}:00:00Z", "message": "m", **extra}


def test_a_live_backup_adopts_a_newer_verdict_from_its_catalog_entry() -> None:
    from safehold.engine.catalog_sync import newer_verdict
    from safehold.storage.catalog import BackupManifest

    entry = BackupManifest.model_validate(
        {
            "namespace": "ns",
            "name": "b1",
            "uid": "run-1",
            "storageLocation": "primary",
            "phase": "Succeeded",
            "verification": _verdict("Corrupt", 12),
        }
    )

    def body(**status: object) -> dict[str, object]:
        return {"metadata": {"name": "b1"}, "status": {"runUid": "run-1", **status}}

    adopted = newer_verdict(body(), entry)
    assert adopted is not None
    assert adopted.result == "Corrupt"
    assert newer_verdict(body(verification=_verdict("Verified", 11)), entry) is not None
    assert newer_verdict(body(verification=_verdict("Verified", 12)), entry) is None  # not newer
    assert newer_verdict(body(runUid="run-2"), entry) is None  # another run's entry
    assert newer_verdict(body(), entry.model_copy(update={"verification": None})) is None


def test_an_explicit_restore_of_a_corrupt_backup_warns_with_the_verdict() -> None:
    from safehold.api.backup import BackupStatus
    from safehold.engine.restore import corrupt_warning

    checked = BackupStatus.model_validate({"verification": _verdict("Corrupt", 9)})
    warning = corrupt_warning("b1", checked)
    assert warning == (
        "Backup b1 is Corrupt (verdict of the repository check at 2026-03-01T09:00:00+00:00: m); "
        "restoring what is left of it: items whose data was lost fail"
    )
    drilled = BackupStatus.model_validate(
        {"verification": _verdict("Corrupt", 9, verification="d1")}
    )
    assert "verdict of drill d1" in (corrupt_warning("b1", drilled) or "")
    verified = BackupStatus.model_validate({"verification": _verdict("Verified", 9)})
    assert corrupt_warning("b1", verified) is None
    assert corrupt_warning("b1", BackupStatus()) is None
