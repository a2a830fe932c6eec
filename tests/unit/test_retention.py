"""Retention selection (restic forget semantics in a time zone) against explicit tables.
tests/integration/test_retention_restic.py compares the same function with the real restic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from safehold.api.policy import Retention
from safehold.planning.retention import Candidate, expired_failures, select

UTC_ZONE = ZoneInfo("UTC")

# Backups of 2026: name -> UTC time. Two per day on 1-3 Jan, then one a week, then monthly.
TABLE = {
    "a": datetime(2025, 12, 31, 23, 30, tzinfo=UTC),
    "b": datetime(2026, 1, 1, 1, 0, tzinfo=UTC),
    "c": datetime(2026, 1, 1, 13, 0, tzinfo=UTC),
    "d": datetime(2026, 1, 2, 1, 0, tzinfo=UTC),
    "e": datetime(2026, 1, 2, 13, 0, tzinfo=UTC),
    "f": datetime(2026, 1, 3, 1, 0, tzinfo=UTC),
    "g": datetime(2026, 1, 3, 13, 0, tzinfo=UTC),
    "h": datetime(2026, 1, 10, 13, 0, tzinfo=UTC),
    "i": datetime(2026, 2, 10, 13, 0, tzinfo=UTC),
    "j": datetime(2026, 3, 10, 13, 0, tzinfo=UTC),
    "k": datetime(2026, 3, 10, 13, 40, tzinfo=UTC),
}
CANDIDATES = [Candidate(n, t) for n, t in TABLE.items()]


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        ({"keepLast": 3}, "ijk"),
        ({"keepHourly": 2}, "ik"),  # j and k share an hour: k stands for it
        ({"keepDaily": 3}, "hik"),
        ({"keepDaily": 5}, "egikh"),
        ({"keepWeekly": 2}, "ik"),
        ({"keepMonthly": 2}, "ik"),
        ({"keepMonthly": 5}, "ahik"),  # Dec 2025, Jan, Feb, Mar (h stands for January)
        ({"keepYearly": 1}, "k"),
        ({"keepYearly": 3}, "ak"),
        ({"keepLast": 2, "keepMonthly": 3}, "hijk"),
        ({"keepDaily": 2, "keepWeekly": 2}, "ik"),
        ({"keepDaily": 2, "keepWeekly": 3}, "hik"),
        ({"keepLast": 0}, "abcdefghijk"),  # only zero counts: keep all
        ({}, "abcdefghijk"),
    ],
)
def test_selection_table(rules: dict[str, int], kept: str) -> None:
    decision = select(CANDIDATES, Retention.model_validate(rules), UTC_ZONE)
    assert sorted(decision.keep) == sorted(kept)
    assert decision.delete == [n for n in TABLE if n not in kept]  # oldest first


def test_hourly_buckets_merge_within_one_hour() -> None:
    decision = select(CANDIDATES, Retention(keep_hourly=2), UTC_ZONE)
    # j (13:00) and k (13:40) share the hour 13 of 10 March: only k counts for it.
    assert "j" not in decision.keep
    assert decision.keep["k"] == ["hourly"]


def test_days_are_taken_in_the_policy_time_zone() -> None:
    # a (23:30 UTC, 31 Dec) is 1 January in Berlin, the same day as b and c.
    berlin = select(CANDIDATES[:4], Retention(keep_daily=10), ZoneInfo("Europe/Berlin"))
    assert sorted(berlin.keep) == ["a", "c", "d"]  # a only as the oldest (counts left)
    utc = select(CANDIDATES[:4], Retention(keep_daily=2), UTC_ZONE)
    assert sorted(utc.keep) == ["c", "d"]
    berlin2 = select(CANDIDATES[:4], Retention(keep_daily=2), ZoneInfo("Europe/Berlin"))
    assert sorted(berlin2.keep) == ["c", "d"]
    ny = select(CANDIDATES[:4], Retention(keep_daily=2), ZoneInfo("America/New_York"))
    assert sorted(ny.keep) == ["b", "d"]  # 1 Jan 01:00 UTC is 31 Dec 20:00 in New York


def test_only_successful_backups_count_and_failed_ones_are_never_selected() -> None:
    cands = [*CANDIDATES, Candidate("newer-failed", datetime(2026, 4, 1, tzinfo=UTC), False)]
    decision = select(cands, Retention(keep_last=1), UTC_ZONE)
    assert list(decision.keep) == ["k"]
    assert "newer-failed" not in decision.delete


def test_the_newest_successful_backup_is_always_kept() -> None:
    decision = select(CANDIDATES, Retention(keep_yearly=1), UTC_ZONE)
    assert "k" in decision.keep
    assert select([], Retention(keep_last=1), UTC_ZONE).delete == []


def test_failed_backups_expire_after_the_grace_period() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    cands = [
        Candidate("old-failure", now - timedelta(hours=25), successful=False),
        Candidate("fresh-failure", now - timedelta(hours=2), successful=False),
        Candidate("old-success", now - timedelta(days=30)),
    ]
    assert expired_failures(cands, now) == ["old-failure"]
    assert expired_failures(cands, now, timedelta(hours=1)) == ["old-failure", "fresh-failure"]


def test_the_example_of_the_docs() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    local = {
        "b7": datetime(2026, 3, 10, 14, 40),
        "b6": datetime(2026, 3, 10, 14, 0),
        "b5": datetime(2026, 2, 10, 14, 0),
        "b4": datetime(2026, 1, 10, 14, 0),
        "b3": datetime(2026, 1, 3, 14, 0),
        "b2": datetime(2026, 1, 3, 2, 0),
    }
    cands = [Candidate(n, t.replace(tzinfo=berlin)) for n, t in local.items()]
    decision = select(cands, Retention(keep_daily=3, keep_weekly=2), berlin)
    assert decision.keep == {"b7": ["daily", "weekly"], "b5": ["daily", "weekly"], "b4": ["daily"]}
    assert decision.delete == ["b2", "b3", "b6"]


def _view(name: str, hour: int, *, corrupt: bool = False, phase: str = "Succeeded") -> Any:
    from safehold.planning.policy import BackupView

    start = datetime(2026, 1, 1, hour, tzinfo=UTC)
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": start.isoformat(),
        "completionTime": (start + timedelta(minutes=5)).isoformat(),
    }
    if corrupt:
        status["verification"] = {"result": "Corrupt", "time": start.isoformat()}
    body = {"metadata": {"name": name, "namespace": "ns"}, "status": status}
    return BackupView.of(body)


def test_a_corrupt_backup_is_never_the_good_backup_retention_keeps() -> None:
    """The newest backup is Corrupt: keepLast 1 keeps the older good one instead, and the
    Corrupt one stays while it is newer than what the rules keep."""
    from safehold.planning.retention import plan

    views = [_view("b1", 1), _view("b2", 2), _view("b3", 3, corrupt=True)]
    planned = plan(Retention(keep_last=1), UTC_ZONE, None, views, datetime(2026, 1, 2, tzinfo=UTC))
    assert planned.newest == "b3"
    assert planned.delete == ["b1"]  # b2 kept, b3 (Corrupt) kept


def test_a_corrupt_backup_older_than_every_kept_backup_is_deleted() -> None:
    from safehold.planning.retention import plan

    views = [_view("b1", 1, corrupt=True), _view("b2", 2), _view("b3", 3), _view("b4", 4)]
    planned = plan(Retention(keep_last=2), UTC_ZONE, None, views, datetime(2026, 1, 2, tzinfo=UTC))
    assert planned.delete == ["b1", "b2"]  # oldest first


def test_corrupt_backups_are_kept_when_nothing_good_is_kept_or_no_rule_deletes() -> None:
    from safehold.planning.retention import plan

    now = datetime(2026, 1, 2, tzinfo=UTC)
    only_bad = [_view("b1", 1, corrupt=True), _view("b2", 2, corrupt=True)]
    assert plan(Retention(keep_last=1), UTC_ZONE, None, only_bad, now).delete == []
    mixed = [_view("b1", 1, corrupt=True), _view("b2", 2), _view("b3", 3)]
    assert plan(Retention(), UTC_ZONE, None, mixed, now).delete == []
    # A PartiallyFailed one is never deleted by retention, Corrupt or not.
    partial = [_view("b1", 1, corrupt=True, phase="PartiallyFailed"), _view("b2", 2)]
    assert plan(Retention(keep_last=1), UTC_ZONE, None, partial, now).delete == []
