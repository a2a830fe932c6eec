"""`safehold verify`, the pure parts: the BackupVerification builder, `-o yaml|json`, usage
errors, the list and describe rendering, what `--wait` prints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from safehold.api.verification import BackupVerificationSpec, BackupVerificationStatus
from safehold.cli import common, manifests, output, verify
from safehold.cli.main import main

NOW = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-02T11:58:00Z",
    }


# What the drill engine writes (planning/drills.verdict): named by the first failed check.
CONTENT_FAILED = "check content failed: configmaps/shop/app differs from the backup's index"

FAILED_DRILL: dict[str, Any] = {
    "metadata": {"name": "d1", "namespace": "shop", "creationTimestamp": "2025-01-02T11:00:00Z"},
    "spec": {"policyRef": {"name": "nightly"}, "keepOnFailure": "2h"},
    "status": {
        "phase": "Failed",
        "result": "Failed",
        "backup": "nightly-202501020300",
        "policy": "nightly",
        "conditions": [
            _condition("Succeeded", "False", "ChecksumMismatch", CONTENT_FAILED),
            _condition("Complete", "True", "ChecksumMismatch", CONTENT_FAILED),
        ],
        "startTime": "2025-01-02T11:00:05Z",
        "completionTime": "2025-01-02T11:02:05Z",
        "restoreSeconds": 80.4,
        "rto": "1m20s",
        "backupAgeSeconds": 8 * 3600,
        "scratchNamespaces": ["safehold-drill-d1-x7k2p"],
        "dataSubset": "3/10",
        "scratchRemoved": False,
        "keepUntil": "2025-01-02T13:02:05Z",
        "scratchDatabases": ["orders/orders_drill_d1"],
        "checks": [
            {
                "name": "restore",
                "result": "Passed",
                "message": "12 objects",
                "durationSeconds": 80.4,
            },
            {"name": "repository", "result": "Passed", "durationSeconds": 3.25},
            {
                "name": "content",
                "result": "Failed",
                "reason": "ChecksumMismatch",
                "message": "configmaps/shop/app differs from the backup's index",
                "durationSeconds": 0.5,
            },
            {"name": "workloads", "result": "Skipped", "reason": "NotReached"},
        ],
        "errors": ["content: configmaps/shop/app differs"],
    },
}

PASSED_DRILL: dict[str, Any] = {
    "metadata": {"name": "d2", "namespace": "shop", "creationTimestamp": "2025-01-02T11:30:00Z"},
    "spec": {"backupRef": {"name": "b1"}},
    "status": {
        "phase": "Succeeded",
        "result": "Passed",
        "backup": "b1",
        "conditions": [
            _condition("Succeeded", "True", "Verified", "2 check(s) passed: restore, content"),
            _condition("Complete", "True", "Verified", "2 check(s) passed: restore, content"),
        ],
        "completionTime": "2025-01-02T11:35:00Z",
        "restoreSeconds": 42.0,
        "rto": "42s",
        "backupAgeSeconds": 300,
        "scratchNamespaces": ["safehold-drill-d2-abcde", "safehold-drill-d2-fghij"],
        "scratchRemoved": True,
        "checks": [{"name": n, "result": "Passed"} for n in ("restore", "content")],
    },
}


def test_the_examples_are_valid_statuses() -> None:
    for drill in (FAILED_DRILL, PASSED_DRILL):
        BackupVerificationStatus.model_validate(drill["status"])
        BackupVerificationSpec.model_validate(drill["spec"])


# --- the builder ------------------------------------------------------------------------


def test_verification_from_backup_is_minimal() -> None:
    body = manifests.verification("d1", namespace="shop", backup="b1")
    assert body == {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupVerification",
        "metadata": {"name": "d1", "namespace": "shop"},
        "spec": {"backupRef": {"name": "b1"}},
    }


def test_verification_with_every_option() -> None:
    body = manifests.verification(
        "d1", policy="nightly", keep_on_failure="2h", timeout="30m", workloads=False
    )
    assert body["spec"] == {
        "policyRef": {"name": "nightly"},
        "checks": {"workloads": False},
        "keepOnFailure": "2h",
        "timeout": "30m",
    }
    assert next(iter(body["spec"])) == "policyRef"  # the source first, as a person writes it
    spec = BackupVerificationSpec.model_validate(body["spec"])
    assert spec.checks.repository is True  # the other checks keep their defaults


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --from-backup or --from-policy"),
        ({"backup": "b", "policy": "p"}, "exactly one of --from-backup or --from-policy"),
        ({"backup": "b", "timeout": "25h"}, "--timeout: '25h'"),
        ({"backup": "b", "timeout": "30s"}, "--timeout"),
        ({"backup": "b", "keep_on_failure": "721h"}, "--keep-on-failure"),
        ({"backup": "Bad_Name"}, "--from-backup"),
    ],
)
def test_verification_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.verification("d1", **kwargs)


def test_names_are_limited_to_63_characters() -> None:
    with pytest.raises(manifests.ManifestError, match="at most 63"):
        manifests.verification("d" * 64, backup="b1")
    name = manifests.verification_name("a" * 80, NOW)
    assert name == "a" * 41 + "-drill-20250102-120000"
    assert len(name) == 63
    assert manifests.verification_name("nightly", NOW) == "nightly-drill-20250102-120000"
    # never a name ending in "-" before the suffix
    assert manifests.verification_name("x" * 40 + "-y", NOW) == "x" * 40 + "-drill-20250102-120000"


# --- the command line ---------------------------------------------------------------------


def test_create_yaml_prints_and_creates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "verify", "create", "d1", "--from-policy", "nightly", "-n", "shop",
        "--keep-on-failure", "2h", "--kubeconfig", "/nonexistent", "-o", "yaml",
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load(out) == manifests.verification(
        "d1", namespace="shop", policy="nightly", keep_on_failure="2h"
    )


def test_create_without_a_name_names_the_drill_after_its_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "verify", "create", "--from-backup", "b1", "--no-workloads",
                         "-o", "json")  # fmt: skip
    assert code == 0, err
    body = json.loads(out)
    assert body["metadata"]["name"].startswith("b1-drill-")
    assert body["spec"] == {"backupRef": {"name": "b1"}, "checks": {"workloads": False}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["d1"], "one of the arguments --from-backup --from-policy is required"),
        (["d1", "--from-backup", "b", "--from-policy", "p"], "not allowed with argument"),
        (["--from-backup", "b", "--keep-on-failure", "2d"], "expected a duration such as"),
        (["--from-backup", "b", "--timeout", "48h"], "--timeout: '48h'"),
        (["--from-backup", "b", "--wait-timeout", "soon"], "--wait-timeout"),
        (["--from-backup", "b", "--wait", "-o", "yaml"], "--wait cannot be combined with -o"),
        (["D1", "--from-backup", "b", "-o", "yaml"], "name 'D1'"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "verify", "create", *argv)
    assert code == 2
    assert message in err, err
    assert out == ""


@pytest.mark.parametrize(
    ("flags", "seconds"),
    [([], 3600 + 600), (["--timeout", "30m"], 1800 + 600), (["--wait-timeout", "5m"], 300)],
)
def test_wait_waits_the_drill_timeout_and_a_grace_by_default(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], seconds: float
) -> None:
    seen: list[float] = []

    def create_and_wait(args: Any, *_: Any, **__: Any) -> int:
        seen.append(args.timeout)
        return 0

    monkeypatch.setattr(verify, "create_and_wait", create_and_wait)
    assert main(["verify", "create", "d1", "--from-backup", "b", "--wait", *flags]) == 0
    assert seen == [seconds]


# --- rendering ----------------------------------------------------------------------------


def test_verification_table() -> None:
    new = {"metadata": {"name": "d3", "namespace": "shop"}, "spec": {"policyRef": {"name": "p"}}}
    text = output.verification_table([FAILED_DRILL, PASSED_DRILL, new], NOW, all_namespaces=False)
    header, *rows = text.splitlines()
    assert header.split() == ["NAME", "BACKUP", "RESULT", "RTO", "FAILED-CHECK", "AGE"]
    assert rows[0].split() == ["d1", "nightly-202501020300", "Failed", "1m20s", "content", "60m"]
    assert rows[1].split() == ["d2", "b1", "Passed", "42s", "30m"]
    assert rows[2].split() == ["d3", "policy/p", "New", "<unknown>"]
    wide = output.verification_table([PASSED_DRILL], NOW, all_namespaces=True)
    assert wide.splitlines()[1].split()[:2] == ["shop", "d2"]


def test_describe_a_failed_drill() -> None:
    text = output.describe_verification(FAILED_DRILL, NOW)
    for expected in [
        "Kind:           BackupVerification",
        "Phase:          Failed",
        "Result:         Failed (failed: content)",
        "From policy:    nightly (newest good backup)",
        "Backup:         nightly-202501020300",
        "Duration:       2m",
        "RTO:            1m20s (measured restore time)",
        "RPO:            8h (age of the backup at the drill)",
        "Scratch:        safehold-drill-d1-x7k2p (kept for inspection until "
        "2025-01-02T13:02:05Z, 62m left)",
        "Scratch DBs:    orders/orders_drill_d1",
        "Keep if failed: 2h",
        "Timeout:        1h",
        "CHECK        RESULT    REASON             DURATION   MESSAGE",
        "restore      Passed                       80s        12 objects",
        "repository   Passed                       3.2s",
        "content      Failed    ChecksumMismatch   0.5s       configmaps/shop/app differs from",
        "workloads    Skipped   NotReached",
        "Errors:\n  - content: configmaps/shop/app differs",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_describe_a_passed_drill_and_a_new_one() -> None:
    text = output.describe_verification(PASSED_DRILL, NOW)
    assert "Scratch:        safehold-drill-d2-abcde, safehold-drill-d2-fghij (removed)" in text
    assert "Result:         Passed\n" in text
    assert "Keep if failed: no (removed at once)" in text
    new = {"metadata": {"name": "d3", "namespace": "shop"}, "spec": {"backupRef": {"name": "b"}}}
    text = output.describe_verification(new, NOW)
    assert "New (not picked up by the operator yet)" in text
    assert "Checks:         <none yet>" in text
    assert "Scratch:        -" in text
    running = {**new, "status": {"phase": "Running", "scratchNamespaces": ["s1"]}}
    assert "Scratch:        s1 (in use)" in output.describe_verification(running, NOW)
    stuck = {**new, "status": {"scratchNamespaces": ["s1"], "completionTime": "2025-01-02T11:00Z"}}
    assert "s1 (NOT removed yet" in output.describe_verification(stuck, NOW)


def test_what_wait_adds_after_the_outcome() -> None:
    assert output.drill_summary(FAILED_DRILL, succeeded=False) == [
        "check content failed (ChecksumMismatch): configmaps/shop/app differs from the "
        "backup's index"
    ]
    assert output.drill_summary(PASSED_DRILL, succeeded=True) == [
        "RTO 42s (restore time), RPO 5m (backup age)"
    ]
    not_started = {"status": {"phase": "Failed"}}
    assert output.drill_summary(not_started, succeeded=False) == []


class FakeObjects(common.Objects):
    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(api=None, kind=common.VERIFICATIONS)  # type: ignore[arg-type]
        self.obj = obj

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.obj


def test_wait_prints_the_failed_check_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = common.wait_for_completion(
        FakeObjects(FAILED_DRILL), "shop", "d1", 10, report=verify._report
    )
    assert code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: backupverification.safehold.io/d1 Failed (ChecksumMismatch: {CONTENT_FAILED})",
        "  check content failed (ChecksumMismatch): configmaps/shop/app differs from the "
        "backup's index",
    ]


def test_wait_prints_rto_and_rpo_of_a_passed_drill(capsys: pytest.CaptureFixture[str]) -> None:
    code = common.wait_for_completion(
        FakeObjects(PASSED_DRILL), "shop", "d2", 10, report=verify._report
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "backupverification.safehold.io/d2 Succeeded (Verified: 2 check(s) passed: restore, "
        "content)",
        "  RTO 42s (restore time), RPO 5m (backup age)",
    ]
