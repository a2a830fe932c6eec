"""Retention selection compared with the real `restic forget --dry-run` (the pinned binary)
on the same backup times: Safehold keeps and deletes exactly what restic would."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from localcluster import binaries
from safehold.api.policy import Retention
from safehold.planning.retention import Candidate, select

# Irregular times across DST, hour, day, ISO week, month and year boundaries.
START = datetime(2023, 12, 20, 22, 40, tzinfo=UTC)
STEPS_HOURS = [0, 1, 1, 19, 24, 2, 200, 700, 1, 1500, 3000, 30]
TIMES = [START + timedelta(hours=sum(STEPS_HOURS[: i + 1])) for i in range(len(STEPS_HOURS))]

RULES = [
    {"keep_last": 3},
    {"keep_hourly": 4},
    {"keep_daily": 5},
    {"keep_weekly": 3},
    {"keep_monthly": 4},
    {"keep_yearly": 2},
    {"keep_monthly": 2},  # counts left after the newest of each month: none, oldest goes
    {"keep_weekly": 20},  # counts left: restic also keeps the oldest backup
    {"keep_daily": 3, "keep_weekly": 2, "keep_monthly": 2},
    {"keep_last": 2, "keep_hourly": 3, "keep_yearly": 5},
    {"keep_daily": 50},  # more than there are: everything is kept
]


def restic(repo: Path, zone: str, *args: str) -> str:
    env = {
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_PASSWORD": "test",
        "TZ": zone,
        "PATH": "/usr/bin:/bin",
        "HOME": str(repo.parent),
    }
    out = subprocess.run(
        [str(binaries.find("restic")), "--no-cache", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout


@pytest.fixture(scope="module", params=["Europe/Berlin"])
def zone_repo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A repository whose snapshots were taken at TIMES on the clock of a time zone (restic
    buckets a snapshot by the wall clock it was taken on)."""
    zone: str = request.param
    root = tmp_path_factory.mktemp("retention")
    data = root / "data"
    data.mkdir()
    (data / "f").write_text("x")
    repo = root / "repo"
    restic(repo, zone, "init")
    for index, when in enumerate(TIMES):
        stamp = when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        restic(repo, zone, "backup", str(data), "--time", stamp, "--tag", f"b{index}", "-q")
    recorded = {
        s["tags"][0]: datetime.fromisoformat(s["time"])
        for s in json.loads(restic(repo, zone, "snapshots", "--json"))
    }
    assert recorded == {f"b{i}": t for i, t in enumerate(TIMES)}
    return zone, repo


@pytest.mark.parametrize("rules", RULES, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()))
def test_retention_matches_restic_forget(
    zone_repo: tuple[str, Path], rules: dict[str, int]
) -> None:
    zone, repo = zone_repo
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in rules.items()]
    report = json.loads(restic(repo, zone, "forget", "--dry-run", "--json", *flags))
    restic_keep = {s["tags"][0] for group in report for s in group["keep"] or []}
    candidates = [Candidate(f"b{i}", t) for i, t in enumerate(TIMES)]
    ours = select(candidates, Retention.model_validate(rules), ZoneInfo(zone))
    assert set(ours.keep) == restic_keep
    assert set(ours.delete) == {c.name for c in candidates} - restic_keep
