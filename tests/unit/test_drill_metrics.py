"""The restore drill metrics (engine/metrics.py), read back from the Prometheus registry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from safehold.api.verification import CheckStatus, VerificationReference
from safehold.engine.metrics import observe_drill, observe_rto_target, seed_last_drill

FINISHED = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)
LATER = datetime(2025, 1, 3, 12, 0, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def fresh_namespace() -> str:
    """Each test its own label values: the registry is process-wide."""
    return f"ns-{uuid.uuid4().hex[:8]}"


def check(name: str, result: str) -> CheckStatus:
    return CheckStatus.model_validate({"name": name, "result": result, "durationSeconds": 1.5})


def test_a_passed_drill_sets_result_success_time_rto_and_checks() -> None:
    ns = fresh_namespace()
    checks = [check("restore", "Passed"), check("content", "Passed"), check("probe:x", "Skipped")]
    observe_drill(ns, "nightly", "Passed", 81.5, checks, FINISHED)
    labels = {"namespace": ns, "policy": "nightly"}
    assert sample("safehold_drill_last_result", **labels) == 1
    assert sample("safehold_drill_last_success_timestamp_seconds", **labels) == (
        FINISHED.timestamp()
    )
    assert sample("safehold_drill_restore_seconds", **labels) == 81.5
    assert sample("safehold_drill_runs_total", **labels, result="Passed") == 1
    assert sample("safehold_drill_check_result", **labels, check="restore") == 1
    assert sample("safehold_drill_check_result", **labels, check="content") == 1
    assert sample("safehold_drill_check_result", **labels, check="probe:x") is None


def test_a_failed_drill_keeps_the_last_success_time_and_names_the_failed_check() -> None:
    ns = fresh_namespace()
    labels = {"namespace": ns, "policy": "nightly"}
    observe_drill(ns, "nightly", "Passed", 60.0, [check("content", "Passed")], FINISHED)
    failed = [check("restore", "Passed"), check("content", "Failed")]
    observe_drill(ns, "nightly", "Failed", None, failed, LATER)
    assert sample("safehold_drill_last_result", **labels) == 0
    assert sample("safehold_drill_last_success_timestamp_seconds", **labels) == (
        FINISHED.timestamp()
    )
    assert sample("safehold_drill_restore_seconds", **labels) == 60.0  # none measured: kept
    assert sample("safehold_drill_check_result", **labels, check="content") == 0
    assert sample("safehold_drill_check_result", **labels, check="restore") == 1
    assert sample("safehold_drill_runs_total", **labels, result="Passed") == 1
    assert sample("safehold_drill_runs_total", **labels, result="Failed") == 1


def test_a_check_the_next_drill_skips_or_drops_leaves_no_series() -> None:
    ns = fresh_namespace()
    labels = {"namespace": ns, "policy": "p"}
    first = [check("restore", "Failed"), check("probe:old", "Failed")]
    observe_drill(ns, "p", "Failed", None, first, FINISHED)
    observe_drill(ns, "p", "Failed", None, [check("restore", "Skipped")], LATER)
    assert sample("safehold_drill_check_result", **labels, check="restore") is None
    assert sample("safehold_drill_check_result", **labels, check="probe:old") is None


def test_a_drill_without_policy_has_an_empty_policy_label() -> None:
    ns = fresh_namespace()
    observe_drill(ns, None, "Passed", 5.0, [check("restore", "Passed")], FINISHED)
    assert sample("safehold_drill_last_result", namespace=ns, policy="") == 1
    assert sample("safehold_drill_runs_total", namespace=ns, policy="", result="Passed") == 1


def test_rto_target_is_set_and_removed() -> None:
    ns = fresh_namespace()
    observe_rto_target(ns, "nightly", 900.0)
    assert sample("safehold_policy_rto_target_seconds", namespace=ns, policy="nightly") == 900
    observe_rto_target(ns, "nightly", None)
    assert sample("safehold_policy_rto_target_seconds", namespace=ns, policy="nightly") is None
    observe_rto_target(ns, "never-had-one", None)  # removing what is not there is fine


def test_seed_after_a_restart_then_observed_drills_win() -> None:
    ns = fresh_namespace()
    labels = {"namespace": ns, "policy": "nightly"}
    last = VerificationReference.model_validate(
        {"name": "d1", "result": "Passed", "completionTime": FINISHED, "restoreSeconds": 42.0}
    )
    seed_last_drill(ns, "nightly", None)
    assert sample("safehold_drill_last_result", **labels) is None
    seed_last_drill(ns, "nightly", last)
    assert sample("safehold_drill_last_result", **labels) == 1
    assert sample("safehold_drill_last_success_timestamp_seconds", **labels) == (
        FINISHED.timestamp()
    )
    assert sample("safehold_drill_restore_seconds", **labels) == 42.0
    observe_drill(ns, "nightly", "Failed", 99.0, [check("restore", "Failed")], LATER)
    seed_last_drill(ns, "nightly", last)  # a stale status does not overwrite the drill
    assert sample("safehold_drill_last_result", **labels) == 0
    assert sample("safehold_drill_restore_seconds", **labels) == 99.0


def test_seed_of_a_failed_last_drill_sets_no_success_time() -> None:
    ns = fresh_namespace()
    last = VerificationReference.model_validate({"name": "d1", "result": "Failed"})
    seed_last_drill(ns, "p", last)
    assert sample("safehold_drill_last_result", namespace=ns, policy="p") == 0
    labels = {"namespace": ns, "policy": "p"}
    assert sample("safehold_drill_last_success_timestamp_seconds", **labels) is None
