"""Mover Jobs run as the ServiceAccount the chart names (SAFEHOLD_MOVER_SERVICE_ACCOUNT)."""

from __future__ import annotations

import pytest

from safehold.planning.builders import MoverSpec, build_job, build_service_account


def _spec() -> MoverSpec:
    return MoverSpec(
        name="m", namespace="ns", verb="volume-backup", env={}, secret_name="s", secret_keys=()
    )


def test_default_account_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_MOVER_SERVICE_ACCOUNT", raising=False)
    pod = build_job(_spec())["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False


def test_named_account_and_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHOLD_MOVER_SERVICE_ACCOUNT", "safehold-mover")
    pod = build_job(_spec())["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "safehold-mover"
    assert pod["automountServiceAccountToken"] is False
    account = build_service_account("safehold-mover", "ns", {"a": "b"})
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"] == {
        "name": "safehold-mover",
        "namespace": "ns",
        "labels": {"a": "b"},
    }
