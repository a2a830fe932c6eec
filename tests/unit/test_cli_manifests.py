"""The CLI's pure parts: object builders, `-o yaml|json`, argument errors, rendering, --wait."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from safehold.api.backup import BackupSpec, BackupStatus
from safehold.api.restore import RestoreRequestSpec, RestoreRequestStatus
from safehold.cli import common, manifests, output
from safehold.cli.completion import walk
from safehold.cli.kubeconfig import context_namespace, find_context
from safehold.cli.main import build_parser, main

NOW = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- builders ---------------------------------------------------------------------------


def test_backup_from_policy_is_minimal_and_valid() -> None:
    body = manifests.backup("before-upgrade", namespace="shop", policy="nightly")
    assert body == {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "before-upgrade", "namespace": "shop"},
        "spec": {"policyRef": {"name": "nightly"}},
    }
    BackupSpec.model_validate(body["spec"])


def test_backup_inline_selection() -> None:
    body = manifests.backup(
        "adhoc",
        location="primary",
        namespaces=["shop", "payments"],
        selector={"app": "web", "tier": "front"},
        include_resources=["deployments.apps", "configmaps"],
        exclude_resources=["secrets"],
        include_cluster_resources=True,
        ttl="72h",
    )
    assert body["spec"] == {
        "storageLocation": "primary",
        "selection": {
            "namespaces": ["shop", "payments"],
            "labelSelector": {"matchLabels": {"app": "web", "tier": "front"}},
            "includedResources": ["deployments.apps", "configmaps"],
            "excludedResources": ["secrets"],
            "includeClusterResources": True,
        },
        "ttl": "72h",
    }
    assert "namespace" not in body["metadata"]
    parsed = BackupSpec.model_validate(body["spec"])
    assert parsed.selection.namespaces == ["shop", "payments"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --from-policy or --location"),
        ({"policy": "p", "location": "l"}, "exactly one of --from-policy or --location"),
        ({"policy": "p", "namespaces": ["a"]}, "need --location"),
        ({"location": "l", "namespaces": ["Not_A_Label"]}, "--include-namespaces"),
        ({"location": "l", "ttl": "3 days"}, "--ttl"),
        ({"location": "Bad Name"}, "--location"),
    ],
)
def test_backup_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.backup("b1", **kwargs)


def test_bad_object_name() -> None:
    with pytest.raises(manifests.ManifestError, match="name 'B_1'"):
        manifests.backup("B_1", policy="nightly")


def test_restore_from_backup_with_everything() -> None:
    body = manifests.restore(
        "shop-copy",
        namespace="shop",
        backup="before-upgrade",
        namespaces=["shop"],
        selector={"app": "web"},
        include_resources=["configmaps"],
        exclude_resources=["secrets"],
        namespace_mapping=[("shop", "shop-copy"), ("db", "db-copy")],
        existing_resource_policy="update",
        dry_run=True,
    )
    assert body["kind"] == "RestoreRequest"
    assert body["spec"] == {
        "backupRef": {"name": "before-upgrade"},
        "includedNamespaces": ["shop"],
        "includedResources": ["configmaps"],
        "excludedResources": ["secrets"],
        "labelSelector": {"matchLabels": {"app": "web"}},
        "namespaceMapping": {"shop": "shop-copy", "db": "db-copy"},
        "existingResourcePolicy": "update",
        "dryRun": True,
    }
    RestoreRequestSpec.model_validate(body["spec"])


def test_restore_from_policy_is_minimal() -> None:
    body = manifests.restore("r1", policy="nightly")
    assert body["spec"] == {"policyRef": {"name": "nightly"}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of --from-backup or --from-policy"),
        ({"backup": "b", "policy": "p"}, "exactly one of --from-backup or --from-policy"),
        ({"backup": "b", "namespace_mapping": [("a", "b"), ("a", "c")]}, "mapped twice"),
        ({"backup": "b", "namespace_mapping": [("a", "B!")]}, "not a namespace name"),
        ({"backup": "b", "existing_resource_policy": "replace"}, "--existing-resource-policy"),
    ],
)
def test_restore_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.restore("r1", **kwargs)


# --- argument types ---------------------------------------------------------------------


def test_argument_types() -> None:
    assert common.comma_list("a, b,c") == ["a", "b", "c"]
    assert common.label_selector("app=web,tier==front") == {"app": "web", "tier": "front"}
    assert common.namespace_pair("a:b") == ("a", "b")
    assert common.duration_seconds("1h30m") == 5400
    for fn, text in [
        (common.comma_list, "a,,b"),
        (common.label_selector, "app"),
        (common.label_selector, "app!=web"),
        (common.namespace_pair, "a-b"),
        (common.namespace_pair, "a:"),
        (common.duration_seconds, "30 minutes"),
        (common.duration_seconds, "0s"),
    ]:
        with pytest.raises(Exception, match=r"expected|duration"):
            fn(text)


# --- the command line: -o yaml|json, usage errors -----------------------------------------


def test_backup_create_yaml_prints_and_creates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # No kubeconfig is read: a bogus one would fail if the CLI tried to connect.
    code, out, err = run(
        capsys,
        "backup",
        "create",
        "before-upgrade",
        "--from-policy",
        "nightly",
        "-n",
        "shop",
        "--kubeconfig",
        "/nonexistent",
        "-o",
        "yaml",
    )
    assert code == 0, err
    assert yaml.safe_load(out) == manifests.backup(
        "before-upgrade", namespace="shop", policy="nightly"
    )


def test_restore_create_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "restore",
        "create",
        "r1",
        "--from-backup",
        "b1",
        "--namespace-mapping",
        "a:b",
        "--namespace-mapping",
        "c:d",
        "--include-resources",
        "configmaps,deployments.apps",
        "--selector",
        "app=web",
        "--existing-resource-policy",
        "update",
        "--dry-run",
        "-o",
        "json",
    )
    assert code == 0
    assert json.loads(out) == {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "RestoreRequest",
        "metadata": {"name": "r1"},
        "spec": {
            "backupRef": {"name": "b1"},
            "includedResources": ["configmaps", "deployments.apps"],
            "labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceMapping": {"a": "b", "c": "d"},
            "existingResourcePolicy": "update",
            "dryRun": True,
        },
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["restore", "create", "r1", "--from-backup", "b", "--from-policy", "p"],
            "not allowed with argument",
        ),
        (["restore", "create", "r1"], "one of the arguments --from-backup --from-policy"),
        (
            ["restore", "create", "r1", "--from-backup", "b", "--namespace-mapping", "a-b"],
            "expected FROM:TO, got 'a-b'",
        ),
        (
            ["restore", "create", "r1", "--from-backup", "b", "--existing-resource-policy", "x"],
            "invalid choice",
        ),
        (["backup", "create", "b1", "--location", "l", "--selector", "app"], "key=value"),
        (["backup", "create", "b1", "--from-policy", "p", "--timeout", "soon"], "duration"),
        (
            ["backup", "create", "b1", "--from-policy", "p", "--include-namespaces", "a"],
            "need --location",
        ),
        (["backup", "create", "b1", "--from-policy", "p", "--wait", "-o", "yaml"], "--wait"),
        (["backup", "create", "B1", "--from-policy", "p", "-o", "yaml"], "name 'B1'"),
        (["backup", "frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_every_command_has_examples_in_its_help() -> None:
    tree = walk(build_parser())
    parser = build_parser()
    for path in ["backup", "backup/create", "backup/list", "backup/describe", "backup/download"]:
        assert path in tree
    for argv in (
        ["backup", "create"],
        ["backup", "list"],
        ["backup", "describe"],
        ["backup", "download"],
        ["restore", "create"],
        ["restore", "list"],
        ["restore", "describe"],
        ["verify", "create"],
        ["verify", "list"],
        ["verify", "describe"],
        ["completion"],
    ):
        sub: Any = parser
        for word in argv:
            action = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction")
            sub = action.choices[word]
        assert "examples:" in sub.format_help(), argv


def test_missing_kubeconfig_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "backup", "list", "--kubeconfig", "/nonexistent/kubeconfig")
    assert code == 1
    assert err.strip() == "error: kubeconfig /nonexistent/kubeconfig does not exist"
    assert out == ""


def test_completion_script_is_valid_bash(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0
    assert "complete -o default -F _safehold safehold kubectl-safehold" in out
    assert '"backup/create") echo' in out
    assert subprocess.run(["bash", "-n"], input=out, text=True, check=False).returncode == 0
    # complete a command line for real
    probe = (
        out
        + '\nCOMP_WORDS=(safehold backup create x -o ""); COMP_CWORD=5; _safehold;'
        + ' echo "${COMPREPLY[*]}"'
        + '\nCOMP_WORDS=(safehold res); COMP_CWORD=1; _safehold; echo "${COMPREPLY[*]}"'
        + '\nCOMP_WORDS=(safehold backup ""); COMP_CWORD=2; _safehold; echo "${COMPREPLY[*]}"'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "yaml json",
        "restore",
        "create list ls describe download delete",
    ]
    code, out, _ = run(capsys, "completion", "zsh")
    assert code == 0
    assert "bashcompinit" in out


# --- kubeconfig -------------------------------------------------------------------------


def test_context_namespace() -> None:
    contexts = [
        {"name": "a", "context": {"cluster": "c", "namespace": "shop"}},
        {"name": "b", "context": {"cluster": "c"}},
    ]
    assert context_namespace(find_context(contexts, contexts[1], None)) == "default"
    assert context_namespace(find_context(contexts, contexts[1], "a")) == "shop"
    assert context_namespace(None) == "default"
    with pytest.raises(common.CliError, match="context 'x' not found"):
        find_context(contexts, None, "x")


# --- rendering --------------------------------------------------------------------------


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-02T11:58:00Z",
    }


FINISHED_BACKUP: dict[str, Any] = {
    "metadata": {"name": "b1", "namespace": "shop", "creationTimestamp": "2025-01-02T11:00:00Z"},
    "spec": {"policyRef": {"name": "nightly"}},
    "status": {
        "phase": "PartiallyFailed",
        "conditions": [
            _condition("Succeeded", "False", "PartiallyFailed", "1 volume failed"),
            _condition("Complete", "True", "Finished"),
        ],
        "policy": "nightly",
        "storageLocation": "primary",
        "startTime": "2025-01-02T11:00:05Z",
        "completionTime": "2025-01-02T11:01:35Z",
        "sizeBytes": 5 * 1024 * 1024,
        "storagePath": "backups/shop/b1/backup.json",
        "resources": {
            "total": 12,
            "byKind": {"configmaps": 4, "deployments.apps": 8},
            "snapshotId": "0123456789abcdef",
        },
        "volumes": [
            {
                "namespace": "shop",
                "pvc": "data",
                "mode": "filesystem",
                "result": "Failed",
                "message": "mover exited 1",
            }
        ],
        "databases": [
            {"target": "pg", "type": "postgresql", "result": "Succeeded", "databases": ["app"]}
        ],
        "errors": ["volume shop/data: mover exited 1"],
        "warnings": ["hook pre/freeze: timed out"],
    },
}


def test_finished_backup_status_is_valid() -> None:
    BackupStatus.model_validate(FINISHED_BACKUP["status"])


def test_backup_table() -> None:
    text = output.backup_table([FINISHED_BACKUP], NOW, all_namespaces=True)
    header, row = text.splitlines()
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "VERDICT",
        "POLICY",
        "LOCATION",
        "SIZE",
        "OBJECTS",
        "AGE",
    ]
    assert row.split() == [
        "shop",
        "b1",
        "PartiallyFailed",
        "nightly",
        "primary",
        "5.0MiB",
        "12",
        "60m",
    ]
    text = output.backup_table([FINISHED_BACKUP], NOW, all_namespaces=False)
    assert text.splitlines()[0].startswith("NAME ")


def test_describe_backup() -> None:
    text = output.describe_backup(FINISHED_BACKUP, NOW)
    for expected in [
        "Phase:          PartiallyFailed",
        "Policy:         nightly",
        "Location:       primary",
        "Storage path:   backups/shop/b1/backup.json",
        "Duration:       90s",
        "Size:           5.0MiB",
        "Resources:      12 objects (snapshot 01234567)",
        "deployments.apps   8",
        "shop/data",
        "mover exited 1",
        "postgresql",
        "Succeeded   False    PartiallyFailed   2m    1 volume failed",
        "Errors:\n  - volume shop/data: mover exited 1",
        "Warnings:\n  - hook pre/freeze: timed out",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_the_verdict_shows_in_list_and_describe() -> None:
    status = {
        **FINISHED_BACKUP["status"],
        "verification": {
            "result": "Corrupt",
            "time": "2025-01-02T11:30:00Z",
            "message": "the repository check of BackupStorageLocation shop/primary found data of "
            "snapshot(s) 01234567 missing or damaged",
        },
    }
    obj = {**FINISHED_BACKUP, "status": status}
    row = output.backup_table([obj], NOW, all_namespaces=False).splitlines()[1].split()
    assert row[:3] == ["b1", "PartiallyFailed", "Corrupt"]
    text = output.describe_backup(obj, NOW)
    assert (
        "Verification:   Corrupt by the location's repository check, 2025-01-02T11:30:00Z" in text
    )
    assert "Verdict:        the repository check of BackupStorageLocation shop/primary" in text
    drilled = {**status, "verification": {**status["verification"], "verification": "drill-1"}}
    assert "Corrupt by drill drill-1" in output.describe_backup({**obj, "status": drilled}, NOW)
    assert "Verification:   - (never drilled" in output.describe_backup(FINISHED_BACKUP, NOW)


def test_describe_new_backup() -> None:
    obj = {"metadata": {"name": "b2", "namespace": "shop"}, "spec": {"storageLocation": "l"}}
    text = output.describe_backup(obj, NOW)
    assert "New (not picked up by the operator yet)" in text
    assert "Policy:         - (inline spec)" in text
    assert "Conditions:     <none>" in text


def test_describe_restore() -> None:
    status = {
        "phase": "Failed",
        "backup": "b1",
        "conditions": [_condition("Succeeded", "False", "BackupNotFound", "no such backup")],
        "counts": {"created": 3, "updated": 1, "skipped": 2, "failed": 4},
        "resultsPath": "backups/shop/b1/restores/r1.json",
        "errors": ["configmaps/shop/x: forbidden"],
    }
    RestoreRequestStatus.model_validate(status)
    obj = {
        "metadata": {
            "name": "r1",
            "namespace": "shop",
            "creationTimestamp": "2025-01-02T11:59:00Z",
        },
        "spec": {"backupRef": {"name": "b1"}, "namespaceMapping": {"shop": "copy"}},
        "status": status,
    }
    text = output.describe_restore(obj, NOW)
    for expected in [
        "From backup:    b1",
        "Namespaces:     shop -> copy",
        "Results path:   backups/shop/b1/restores/r1.json",
        "  Created:        3",
        "  Failed:         4",
        "BackupNotFound",
        "- configmaps/shop/x: forbidden",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"
    row = output.restore_table([obj], NOW, all_namespaces=False).splitlines()[1]
    assert row.split() == ["r1", "Failed", "b1", "false", "3", "1", "2", "4", "60s"]


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, ""), (0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (200 * 1024**3, "200GiB")],
)
def test_human_bytes(size: int | None, text: str) -> None:
    assert output.human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (330, "5m30s"), (5400, "90m"), (4 * 3600, "4h"), (30 * 3600, "30h")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert output.human_duration(seconds) == text


# --- --wait -----------------------------------------------------------------------------


class FakeObjects(common.Objects):
    def __init__(self, states: list[dict[str, Any]]) -> None:
        super().__init__(api=None, kind=common.RESTORES)  # type: ignore[arg-type]
        self.states = states

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _wait(states: list[dict[str, Any]], timeout: float = 10) -> int:
    clock = FakeClock()
    return common.wait_for_completion(
        FakeObjects(states), "ns", "r1", timeout, clock=clock, sleep=clock.sleep
    )


def test_wait_success(capsys: pytest.CaptureFixture[str]) -> None:
    running = {"status": {"phase": "Running"}}
    done = {
        "status": {
            "phase": "Succeeded",
            "conditions": [
                _condition("Succeeded", "True", "Completed"),
                _condition("Complete", "True", "Completed"),
            ],
        }
    }
    assert _wait([{}, running, done]) == 0
    assert "restorerequest.safehold.io/r1 Succeeded" in capsys.readouterr().out


def test_wait_failure_prints_reason(capsys: pytest.CaptureFixture[str]) -> None:
    failed = {
        "status": {
            "phase": "Failed",
            "conditions": [
                _condition("Succeeded", "False", "BackupNotFound", "backup b1 does not exist"),
                _condition("Complete", "True", "Finished"),
            ],
        }
    }
    assert _wait([failed]) == 1
    err = capsys.readouterr().err
    assert "Failed (BackupNotFound: backup b1 does not exist)" in err


def test_wait_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert _wait([{"status": {"phase": "Running"}}], timeout=2) == 3
    assert "timed out after 2s" in capsys.readouterr().err


def test_api_error_message() -> None:
    class Err(Exception):
        status = 404
        reason = "Not Found"
        body = json.dumps({"kind": "Status", "message": 'backups.safehold.io "x" not found'})

    assert common.api_error_message(Err()) == 'backups.safehold.io "x" not found'
    Err.body = "garbage"
    assert common.api_error_message(Err()) == "Not Found (HTTP 404)"


def test_age_of_unknown_time() -> None:
    assert output.age(None, NOW) == "<unknown>"
    assert output.age(NOW - timedelta(days=3), NOW) == "3d"
