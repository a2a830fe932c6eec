"""Pure drill planning: scratch names, harmless copies, the verdict, the data subset and the
policy's drill schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.api.policy import BackupPolicySpec, BackupPolicyStatus
from safehold.api.verification import CheckStatus
from safehold.planning import drills
from safehold.planning.drill_schedule import DrillView, evaluate_drills
from safehold.planning.restore import Entry

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _entry(resource: str, namespace: str | None = "app") -> Entry:
    return Entry("resources/x.json", resource, "v1", "Kind", namespace, "x")


def test_scratch_namespaces_are_valid_unique_and_recognisable() -> None:
    one = drills.scratch_namespace("ops", "d1", "uid-1", "a" * 63)
    two = drills.scratch_namespace("ops", "d1", "uid-2", "a" * 63)
    assert one != two
    assert one.startswith("shv-")
    assert len(one) <= 63
    assert drills.scratch_namespace("ops", "d1", "uid-1", "shop").startswith("shv-shop-")


def test_scratch_namespace_is_restricted_and_machinery() -> None:
    body = drills.scratch_namespace_body("shv-x", "ops", "d1", "uid", "shop")
    labels = body["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["safehold.io/internal"] == "true"
    assert body["metadata"]["annotations"]["safehold.io/verification-uid"] == "uid"


def test_a_drill_restores_only_namespaced_objects() -> None:
    entries = [_entry("configmaps"), _entry("clusterroles.rbac.authorization.k8s.io", None)]
    assert [e.resource for e in drills.drill_entries(entries)] == ["configmaps"]


def test_harmless_copies_lose_gitops_tracking_exposure_and_schedules() -> None:
    service: dict[str, Any] = {
        "metadata": {
            "labels": {"app.kubernetes.io/instance": "shop", "app": "web"},
            "annotations": {"argocd.argoproj.io/tracking-id": "shop:x"},
        },
        "spec": {"type": "LoadBalancer", "externalIPs": ["1.2.3.4"], "selector": {"app": "web"}},
    }
    out = drills.harmless(_entry("services"), service)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "annotations" not in out["metadata"]
    assert out["spec"] == {"type": "ClusterIP", "selector": {"app": "web"}}
    assert service["spec"]["type"] == "LoadBalancer"  # the input is left alone
    cron = drills.harmless(_entry("cronjobs.batch"), {"metadata": {}, "spec": {"schedule": "*"}})
    assert cron["spec"]["suspend"] is True


def _check(name: str, result: str, reason: str | None = None) -> CheckStatus:
    return CheckStatus(name=name, result=result, reason=reason, message=f"{name} said so")  # type: ignore[arg-type]


def test_verdict_names_the_first_failed_check_and_corrupt_only_for_damage() -> None:
    passed = drills.verdict([_check("restore", "Passed"), _check("workloads", "Skipped")])
    assert passed.passed
    assert passed.backup_result == "Verified"
    probe = drills.verdict(
        [_check("restore", "Passed"), _check("probe:x", "Failed", "ProbeFailed")]
    )
    assert not probe.passed
    assert probe.reason == "ProbeFailed"
    assert probe.backup_result == "VerificationFailed"
    assert "probe:x" in probe.message
    damaged = drills.verdict(
        [
            _check("restore", "Failed", "RestoreFailed"),
            _check("repository", "Failed", "RepositoryDamaged"),
        ]
    )
    assert damaged.reason == "RestoreFailed"
    assert damaged.backup_result == "Corrupt"
    assert "repository" in damaged.message


def test_the_data_subset_advances_and_wraps() -> None:
    assert drills.data_subset(None, 3) == (1, 3)
    assert drills.data_subset("1/3", 3) == (2, 3)
    assert drills.data_subset("3/3", 3) == (1, 3)
    assert drills.data_subset("7/10", 3) == (1, 3)  # N changed: start over
    assert drills.data_subset("2/3", 1) == (1, 1)  # everything, every time


def test_damage_elsewhere_does_not_touch_this_backup() -> None:
    assert drills.touches({"abcd1234"}, {"abcd1234ffff"})
    assert not drills.touches({"abcd1234"}, {"99999999ffff"})
    assert drills.touches(set(), {"99999999"})  # unknown: assume the worst


def _policy(**verification: Any) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(
        {"storageLocation": "main", "verification": {"schedule": "0 3 * * *", **verification}}
    )


def _drill(name: str, result: str, started: datetime, seconds: float = 30.0) -> DrillView:
    phase = "Succeeded" if result == "Passed" else "Failed"
    return DrillView(
        {"metadata": {"name": name}}, name, phase, result, started, started + timedelta(minutes=1),
        seconds, "b1",
    )  # fmt: skip


def test_a_due_drill_is_requested_once_and_never_without_a_backup() -> None:
    status = BackupPolicyStatus()
    created = NOW - timedelta(days=1)
    first = evaluate_drills("p", _policy(), status, [], True, created, NOW)
    assert [r.name for r in first.requests] == ["p-drill-202612020300"]
    assert status.next_verification_time == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
    again = evaluate_drills("p", _policy(), status, [], True, created, NOW)
    assert again.requests == []
    fresh = BackupPolicyStatus()
    none = evaluate_drills("p", _policy(), fresh, [], False, created, NOW)
    assert none.requests == []
    assert none.skipped_no_backup


def test_last_drill_rto_target_and_history_limits() -> None:
    status = BackupPolicyStatus()
    drills_ = [
        _drill("d1", "Passed", NOW - timedelta(days=3), 10),
        _drill("d2", "Failed", NOW - timedelta(days=2)),
        _drill("d3", "Passed", NOW - timedelta(days=1), 900),
    ]
    spec = _policy(rtoTarget="5m", successfulHistoryLimit=1, failedHistoryLimit=0)
    decision = evaluate_drills("p", spec, status, drills_, True, NOW - timedelta(days=9), NOW)
    assert status.last_verification is not None
    assert status.last_verification.name == "d3"
    assert status.rto_met is False
    assert decision.problem is not None
    assert decision.problem[0] == "RtoTargetMissed"
    assert sorted(decision.delete) == ["d1", "d2"]
