"""Which database targets a restore cannot restore, decided before it runs, and what the
status says while a database restore waits for its server."""

from __future__ import annotations

from safehold.api.backup import DatabaseResult
from safehold.api.restore import RestoreRequestSpec
from safehold.engine.databases import restore_status
from safehold.planning.restore import unavailable_databases

DUMPED = [
    DatabaseResult(target="cache", type="redis", result="Succeeded"),
    DatabaseResult(target="down", type="redis", result="Failed", message="HostUnreachable: x"),
    DatabaseResult(target="quiet", type="mysql", result="Failed", message="DumpFailed: y"),
]


def _spec(*named: str, enabled: bool = True) -> RestoreRequestSpec:
    return RestoreRequestSpec.model_validate(
        {
            "backupRef": {"name": "b"},
            "databases": {"enabled": enabled, "targets": [{"target": t} for t in named]},
        }
    )


def test_named_targets_without_a_dump_fail_unnamed_failed_ones_are_skipped() -> None:
    found = {d.target: d for d in unavailable_databases(_spec("cache", "down", "ghost"), DUMPED)}
    assert set(found) == {"down", "quiet", "ghost"}
    assert found["down"].result == "Failed"
    assert found["down"].message == (
        "TargetNotBackedUp: its dump failed at backup time (HostUnreachable: x)"
    )
    assert found["quiet"].result == "Skipped"
    assert found["quiet"].message is not None
    assert found["quiet"].message.startswith("TargetNotBackedUp: ")
    assert found["ghost"].result == "Failed"
    assert found["ghost"].message == (
        "TargetNotInBackup: the backup has no database target ghost (it has cache, down, quiet)"
    )


def test_nothing_is_unavailable_when_databases_are_not_restored() -> None:
    assert unavailable_databases(_spec("ghost", enabled=False), DUMPED) == []
    assert [d.target for d in unavailable_databases(_spec("x"), [])] == ["x"]


def test_the_status_names_the_target_and_what_it_waits_for() -> None:
    assert restore_status("cache", "redis.shop.svc:6379", "5m", None) == (
        "database target cache: waiting for redis.shop.svc:6379 to accept connections"
        " (up to 5m), then restoring"
    )
    waiting = {
        "phase": "waiting",
        "attempts": 7,
        "seconds": 12,
        "timeoutSeconds": 300,
        "lastError": "HostUnreachable: " + "x" * 1000,
    }
    said = restore_status("cache", "redis.shop.svc:6379", "5m", waiting)
    assert said.startswith(
        "database target cache: waiting for redis.shop.svc:6379 to accept connections:"
        " 7 attempt(s) in 12 s of 300 s; last error HostUnreachable: "
    )
    assert len(said) < 400  # a mover's log is shown bounded
    restoring = {"phase": "restoring"}
    assert (
        restore_status("cache", "r:1", "5m", restoring)
        == "database target cache: restoring into r:1"
    )
