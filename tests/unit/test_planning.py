"""Pure planning: conditions, durations, location probe scheduling, bucket layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safehold.api.durations import parse_duration
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.planning.conditions import changed, get_condition, set_condition
from safehold.planning.locations import probe_due, status_after_probe
from safehold.storage.layout import BucketLayout
from safehold.storage.redact import redact
from safehold.storage.restic import repository_for
from safehold.storage.s3 import S3Settings

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = set_condition([], "Ready", "False", "BucketNotFound", "no bucket", 1, T0)
    same = set_condition(
        first, "Ready", "False", "InvalidCredentials", "bad key", 2, T0 + timedelta(1)
    )
    assert get_condition(same, "Ready").last_transition_time == T0  # type: ignore[union-attr]
    assert get_condition(same, "Ready").reason == "InvalidCredentials"  # type: ignore[union-attr]
    flipped = set_condition(same, "Ready", "True", "Available", "ok", 2, T0 + timedelta(2))
    assert get_condition(flipped, "Ready").last_transition_time == T0 + timedelta(2)  # type: ignore[union-attr]
    assert len(flipped) == 1
    assert changed(same, flipped, "Ready")
    assert changed(first, same, "Ready")  # reason changed
    assert not changed(flipped, flipped, "Ready")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("26h", 93600), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5d", "m5", "1h 30m", "-1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def _spec(period: str = "5m") -> BackupStorageLocationSpec:
    return BackupStorageLocationSpec.model_validate(
        {
            "bucket": "bkt",
            "credentialsSecret": {"name": "c"},
            "repositoryPasswordSecret": {"name": "p"},
            "syncPeriod": period,
        }
    )


def test_probe_due_follows_sync_period_and_generation() -> None:
    spec = _spec("5m")
    fresh = BackupStorageLocationStatus()
    assert probe_due(spec, fresh, 1, T0)
    ready = status_after_probe(fresh, True, "Available", "ok", True, 1, T0)
    assert not probe_due(spec, ready, 1, T0 + timedelta(minutes=4))
    assert probe_due(spec, ready, 1, T0 + timedelta(minutes=5))
    assert probe_due(spec, ready, 2, T0 + timedelta(seconds=1))  # spec changed


def test_failing_location_is_reprobed_sooner() -> None:
    failing = status_after_probe(
        BackupStorageLocationStatus(), False, "SecretNotFound", "x", None, 1, T0
    )
    spec = _spec("1h")
    assert not probe_due(spec, failing, 1, T0 + timedelta(seconds=29))
    assert probe_due(spec, failing, 1, T0 + timedelta(seconds=30))
    wire = failing.to_wire()
    assert wire["conditions"][0]["reason"] == "SecretNotFound"  # type: ignore[index]
    assert wire["observedGeneration"] == 1


def test_layout_keys() -> None:
    layout = BucketLayout("b", "team/a")
    assert layout.repository_key("shop") == "team/a/repositories/shop"
    assert layout.manifest_key("shop", "b1") == "team/a/backups/shop/b1/backup.json"
    assert BucketLayout("b").manifest_key("ns", "x") == "backups/ns/x/backup.json"


def test_redact_masks_every_secret() -> None:
    text = "key AKIAXYZ secret s3cr3tvalue and again AKIAXYZ"
    assert redact(text, ["AKIAXYZ", "s3cr3tvalue", ""]) == "key *** secret *** and again ***"


def test_restic_repository_keeps_secrets_out_of_arguments() -> None:
    settings = S3Settings(
        bucket="bkt",
        prefix="p",
        region="eu-west-1",
        endpoint="http://127.0.0.1:8333",
        force_path_style=True,
        access_key_id="AKIAEXAMPLE",
        secret_access_key="very-secret-key",
    )
    repo = repository_for(settings, "shop", "repo-password")
    assert repo.url == "s3:http://127.0.0.1:8333/bkt/p/repositories/shop"
    joined = " ".join([repo.url, *repo.options])
    for secret in ("AKIAEXAMPLE", "very-secret-key", "repo-password"):
        assert secret not in joined
        assert secret not in repr(repo)
        assert secret not in repr(settings)
    assert "s3.bucket-lookup=path" in repo.options
    assert repo.env["RESTIC_PASSWORD"] == "repo-password"


def test_exports_leave_out_safeholds_machinery_and_one_shot_kinds() -> None:
    from safehold.planning.selection import NEVER_EXPORTED, is_machinery, without_machinery

    assert without_machinery(None) == "!safehold.io/internal,!safehold.io/backup"
    assert without_machinery("app=shop") == "app=shop,!safehold.io/internal,!safehold.io/backup"
    assert is_machinery({"safehold.io/internal": "true"})
    assert is_machinery({"safehold.io/backup": "old-run"})
    assert not is_machinery({"safehold.io/restored-by": "r1", "safehold.io/policy": "p"})
    assert {
        "backups.safehold.io",
        "restorerequests.safehold.io",
        "backupverifications.safehold.io",
    } <= NEVER_EXPORTED
    assert "backuppolicies.safehold.io" not in NEVER_EXPORTED
