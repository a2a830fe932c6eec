"""The `safehold` CLI as a subprocess against the real API server (no operator running).

Nothing reconciles these objects; where a test needs a finished state it writes the status
itself with `kubectl patch --subresource=status`, as the operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.operator import OperatorProcess
from safehold.storage import catalog, restic
from safehold.storage.s3 import S3Settings, make_client

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture(scope="module", autouse=True)
def _no_operator() -> Iterator[None]:
    """This module plays the operator itself: an operator that another module run by the same
    worker started would take its Backups (a New one turned Failed) and is paused meanwhile."""
    with contextlib.ExitStack() as stack:
        for proc in list(OperatorProcess.running):
            stack.enter_context(proc.stopped())
        yield


def cli(
    cluster: LocalCluster, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "safehold", *args, "--kubeconfig", str(cluster.kubeconfig)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def get(cluster: LocalCluster, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = kubectl(cluster, "get", "-n", namespace, resource, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
    }


def patch_status(
    cluster: LocalCluster, namespace: str, resource: str, name: str, status: dict[str, Any]
) -> None:
    kubectl(
        cluster,
        "patch",
        "-n",
        namespace,
        resource,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def finished(succeeded: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "phase": "Succeeded" if succeeded else "Failed",
        "conditions": [
            _condition("Succeeded", "True" if succeeded else "False", reason, message),
            _condition("Complete", "True", reason, message),
        ],
        "startTime": _now(),
        "completionTime": _now(),
    }


def patch_later(
    cluster: LocalCluster, namespace: str, resource: str, name: str, status: dict[str, Any]
) -> threading.Thread:
    """Patch the status from a background thread once the object exists, after a delay."""

    def work() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = kubectl(cluster, "get", "-n", namespace, resource, name, check=False)
            if found.returncode == 0:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # the CLI is waiting by now
        patch_status(cluster, namespace, resource, name, {"phase": "Running"})
        time.sleep(1)
        patch_status(cluster, namespace, resource, name, status)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_backup_create_from_policy(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(
        local_cluster, "backup", "create", "b1", "--from-policy", "nightly", "-n", namespace
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "backup.safehold.io/b1 created"
    obj = get(local_cluster, namespace, "backups.safehold.io", "b1")
    assert obj["spec"] == {"policyRef": {"name": "nightly"}}

    again = cli(
        local_cluster, "backup", "create", "b1", "--from-policy", "nightly", "-n", namespace
    )
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "already exists" in again.stderr


def test_backup_create_inline(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(
        local_cluster,
        "backup",
        "create",
        "adhoc",
        "--location",
        "primary",
        "--include-namespaces",
        namespace,
        "--include-resources",
        "configmaps,deployments.apps",
        "--selector",
        "app=web",
        "-n",
        namespace,
    )
    assert result.returncode == 0, result.stderr
    spec = get(local_cluster, namespace, "backups.safehold.io", "adhoc")["spec"]
    assert spec["storageLocation"] == "primary"
    assert spec["selection"]["namespaces"] == [namespace]
    assert spec["selection"]["includedResources"] == ["configmaps", "deployments.apps"]
    assert spec["selection"]["labelSelector"] == {"matchLabels": {"app": "web"}}


def test_output_yaml_creates_nothing(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(
        local_cluster, "backup", "create", "gitops", "--from-policy", "nightly", "-n", namespace,
        "-o", "yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["metadata"] == {"name": "gitops", "namespace": namespace}
    assert printed["spec"] == {"policyRef": {"name": "nightly"}}
    missing = kubectl(local_cluster, "get", "-n", namespace, "backups.safehold.io", "gitops",
                      check=False)  # fmt: skip
    assert missing.returncode != 0
    # and what it printed is what the API server accepts
    kubectl(local_cluster, "apply", "-f", "-", stdin=result.stdout)


def test_list_and_describe_finished_backup(local_cluster: LocalCluster, namespace: str) -> None:
    assert cli(local_cluster, "backup", "create", "done", "--from-policy", "nightly",
               "-n", namespace).returncode == 0  # fmt: skip
    assert cli(local_cluster, "backup", "create", "fresh", "--location", "primary",
               "-n", namespace).returncode == 0  # fmt: skip
    status = finished(True, "Completed", "12 objects, 1 volume")
    status |= {
        "policy": "nightly",
        "storageLocation": "primary",
        "sizeBytes": 3 * 1024 * 1024,
        "storagePath": f"backups/{namespace}/done/backup.json",
        "resources": {"total": 12, "byKind": {"configmaps": 5, "deployments.apps": 7}},
        "warnings": ["volume data: file changed while reading"],
    }
    patch_status(local_cluster, namespace, "backups.safehold.io", "done", status)

    listed = cli(local_cluster, "backup", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    headers = ["NAME", "PHASE", "VERDICT", "POLICY", "LOCATION", "SIZE", "OBJECTS", "AGE"]
    assert lines[0].split() == headers
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["done"][1:6] == ["Succeeded", "nightly", "primary", "3.0MiB", "12"]
    assert rows["fresh"][1:3] == ["New", "primary"]

    everywhere = cli(local_cluster, "backup", "list", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [namespace, "done"] for line in everywhere.stdout.splitlines())

    described = cli(local_cluster, "backup", "describe", "done", "-n", namespace)
    assert described.returncode == 0, described.stderr
    for expected in [
        "Phase:          Succeeded",
        "Location:       primary",
        f"Storage path:   backups/{namespace}/done/backup.json",
        "Resources:      12 objects",
        "deployments.apps   7",
        "Complete    True     Completed",
        "12 objects, 1 volume",
        "- volume data: file changed while reading",
    ]:
        assert expected in described.stdout, f"{expected!r} not in:\n{described.stdout}"


def test_describe_missing_backup(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(local_cluster, "backup", "describe", "nope", "-n", namespace)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == 'error: backups.safehold.io "nope" not found\n'
    result = cli(local_cluster, "restore", "describe", "nope", "-n", namespace)
    assert result.returncode == 1
    assert result.stderr == 'error: restorerequests.safehold.io "nope" not found\n'


def test_restore_wait_failure(local_cluster: LocalCluster, namespace: str) -> None:
    status = finished(False, "BackupNotFound", "backup b1 does not exist")
    thread = patch_later(local_cluster, namespace, "restorerequests.safehold.io", "r-fail", status)
    result = cli(
        local_cluster, "restore", "create", "r-fail", "--from-backup", "b1", "-n", namespace,
        "--wait", "--timeout", "60s",
    )  # fmt: skip
    thread.join()
    assert result.returncode == 1, result.stderr
    assert "restorerequest.safehold.io/r-fail created" in result.stdout
    assert "BackupNotFound: backup b1 does not exist" in result.stderr


def test_restore_wait_success(local_cluster: LocalCluster, namespace: str) -> None:
    status = finished(True, "Completed", "3 objects created")
    status |= {"backup": "b1", "counts": {"created": 3, "updated": 0, "skipped": 1, "failed": 0}}
    thread = patch_later(local_cluster, namespace, "restorerequests.safehold.io", "r-ok", status)
    result = cli(
        local_cluster, "restore", "create", "r-ok", "--from-backup", "b1", "-n", namespace,
        "--namespace-mapping", f"{namespace}:{namespace}-copy", "--dry-run", "--wait",
    )  # fmt: skip
    thread.join()
    assert result.returncode == 0, result.stderr
    assert "r-ok Succeeded" in result.stdout
    spec = get(local_cluster, namespace, "restorerequests.safehold.io", "r-ok")["spec"]
    assert spec["backupRef"] == {"name": "b1"}
    assert spec["namespaceMapping"] == {namespace: f"{namespace}-copy"}
    assert spec["dryRun"] is True

    listed = cli(local_cluster, "restore", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:8] == [
        "r-ok", "Succeeded", "b1", "true", "3", "0", "1", "0",
    ]  # fmt: skip
    described = cli(local_cluster, "restore", "describe", "r-ok", "-n", namespace)
    assert described.returncode == 0, described.stderr
    assert "  Created:        3" in described.stdout
    assert "Backup:         b1" in described.stdout


def test_wait_timeout_exits_3(local_cluster: LocalCluster, namespace: str) -> None:
    started = time.monotonic()
    result = cli(
        local_cluster, "restore", "create", "r-slow", "--from-policy", "nightly", "-n", namespace,
        "--wait", "--timeout", "2s",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "timed out after 2s" in result.stderr
    assert time.monotonic() - started < 30


def test_namespace_from_context(local_cluster: LocalCluster, namespace: str, tmp_path: Any) -> None:
    config = yaml.safe_load(local_cluster.kubeconfig.read_text())
    for entry in config["contexts"]:
        entry["context"]["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "safehold", "backup", "create", "ctx", "--from-policy", "p",
           "--kubeconfig", str(path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    get(local_cluster, namespace, "backups.safehold.io", "ctx")


def test_invalid_object_is_rejected_by_the_server(
    local_cluster: LocalCluster, namespace: str
) -> None:
    result = cli(local_cluster, "backup", "create", "x", "--from-policy", "p", "-n", "no-such-ns")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


def test_backup_download(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export of a backup comes back as a tar, read with the user's kubeconfig."""
    monkeypatch.setenv("SAFEHOLD_RESTIC", str(binaries.find("restic")))
    bucket, password = f"cli-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    local_cluster.create_bucket(bucket)
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
        for name, data in [
            (
                "s3",
                {
                    "accessKeyId": local_cluster.s3_access_key,
                    "secretAccessKey": local_cluster.s3_secret_key,
                },
            ),
            ("pw", {"password": password}),
        ]
    ]
    location = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": "primary"},
        "spec": {
            "endpoint": local_cluster.s3_endpoint,
            "bucket": bucket,
            "prefix": "team-a",
            "forcePathStyle": True,
            "credentialsSecret": {"name": "s3"},
            "repositoryPasswordSecret": {"name": "pw"},
        },
    }
    kubectl(local_cluster, "apply", "-n", namespace, "-f", "-",
            stdin=yaml.safe_dump_all([*secrets, location]))  # fmt: skip

    # What the operator leaves behind: an export in the namespace's repository + a manifest.
    root = tmp_path / "export"
    (root / "resources" / "configmaps").mkdir(parents=True)
    (root / "resources" / "configmaps" / "app.json").write_text('{"kind": "ConfigMap"}')
    (root / "index.json").write_text("[]")
    settings = S3Settings(
        bucket=bucket,
        prefix="team-a",
        region="us-east-1",
        endpoint=local_cluster.s3_endpoint,
        force_path_style=True,
        access_key_id=local_cluster.s3_access_key,
        secret_access_key=local_cluster.s3_secret_key,
    )
    repo = restic.repository_for(settings, namespace, password)
    restic.init(repo)
    snapshot = restic.backup_directory(repo, str(root), tags=["test"]).snapshot_id
    manifest = catalog.BackupManifest(
        namespace=namespace,
        name="b1",
        storage_location="primary",
        phase="Succeeded",
        export=catalog.ExportInfo(root=str(root)),
    )
    catalog.write_manifest(make_client(settings), settings.layout, manifest)

    assert cli(local_cluster, "backup", "create", "b1", "--from-policy", "nightly",
               "-n", namespace).returncode == 0  # fmt: skip
    not_yet = cli(local_cluster, "backup", "download", "b1", "-n", namespace)
    assert not_yet.returncode == 1
    assert "no exported objects to download yet" in not_yet.stderr
    status = finished(True, "Completed", "2 objects")
    status |= {"storageLocation": "primary", "resources": {"total": 1, "snapshotId": snapshot}}
    patch_status(local_cluster, namespace, "backups.safehold.io", "b1", status)

    target = tmp_path / "out" / "b1.tar"
    target.parent.mkdir()
    result = cli(local_cluster, "backup", "download", "b1", "-n", namespace,
                 "-o", str(target), env=dict(os.environ))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {target} (")
    for secret in (password, local_cluster.s3_secret_key):
        assert secret not in result.stdout + result.stderr
    with tarfile.open(target) as archive:
        names = archive.getnames()
    # the documented layout at the archive's top, not the path the export was taken at
    assert sorted(names) == [
        "index.json", "resources", "resources/configmaps", "resources/configmaps/app.json",
    ], names  # fmt: skip
    assert [p.name for p in target.parent.iterdir()] == ["b1.tar"]  # no temp file left
    assert target.stat().st_mode & 0o077 == 0


# --- flags before and after the command, the kubectl plugin form (#16) ---------------------


def plain(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI exactly as given (no --kubeconfig appended: KUBECONFIG names the cluster)."""
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_connection_flags_before_the_command(local_cluster: LocalCluster, namespace: str) -> None:
    kubeconfig = str(local_cluster.kubeconfig)
    created = subprocess.run(
        [sys.executable, "-m", "safehold", "-n", namespace, "--kubeconfig", kubeconfig,
         "restore", "create", "r-before", "--from-backup", "b1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout == "restorerequest.safehold.io/r-before created\n"
    spec = get(local_cluster, namespace, "restorerequests.safehold.io", "r-before")["spec"]
    assert spec["backupRef"] == {"name": "b1"}
    after = plain(local_cluster, "restore", "create", "r-after", "--from-backup", "b1",
                  "-n", namespace)  # fmt: skip
    assert after.returncode == 0, after.stderr
    listed = plain(local_cluster, "-n", namespace, "restore", "list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert names == ["r-after", "r-before"]
    described = plain(local_cluster, "--namespace", namespace, "restore", "describe", "r-before")
    assert described.returncode == 0, described.stderr
    assert f"Namespace:      {namespace}" in described.stdout
    # a flag after the command wins over the one before it
    other = plain(local_cluster, "-n", "no-such-namespace", "restore", "describe", "r-before",
                  "-n", namespace)  # fmt: skip
    assert other.returncode == 0, other.stderr
    refused = plain(local_cluster, "-n", namespace, "operator")
    assert refused.returncode == 2
    assert "-n/--namespace before `operator`" in refused.stderr


def test_kubectl_plugin_takes_flags_after_its_name(
    local_cluster: LocalCluster, namespace: str
) -> None:
    plugin = Path(sys.executable).parent / "kubectl-safehold"
    assert plugin.is_file(), "the package installs the kubectl-safehold console script"
    env = dict(
        os.environ,
        PATH=f"{plugin.parent}:{binaries.find('kubectl').parent}:/usr/bin:/bin",
        KUBECONFIG=str(local_cluster.kubeconfig),
    )

    def kubectl_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                              check=False, env=env)  # fmt: skip

    created = kubectl_cli("safehold", "-n", namespace, "restore", "create", "r-plugin",
                          "--from-backup", "b1")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout == "restorerequest.safehold.io/r-plugin created\n"
    listed = kubectl_cli("safehold", "restore", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[0] == "r-plugin"
    # kubectl itself refuses flags before the plugin's name, as docs/cli.md says
    before = kubectl_cli("-n", namespace, "safehold", "restore", "list")
    assert before.returncode != 0
    assert "flags cannot be placed before plugin name" in before.stderr


# --- restore create: database options (#16) -------------------------------------------------


def test_restore_create_database_options(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(
        local_cluster, "restore", "create", "r-db", "--from-backup", "b1", "-n", namespace,
        "--database-mapping", "orders:orders=orders_copy",
        "--database-clean", "orders",
        "--database-restore-accounts", "orders",
        "--database-clean", "cache",
        "--database-host", "cache=redis-2.shop.svc:6380",
        "--database-credentials", "cache=redis-2-auth",
        "--database-tls", "cache=require",
        "--target-ready-timeout", "90s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = get(local_cluster, namespace, "restorerequests.safehold.io", "r-db")["spec"]
    # what the flags said, plus the schema's defaults (false / skip / true), nothing else
    assert spec == {
        "backupRef": {"name": "b1"},
        "databases": {
            "enabled": True,
            "targets": [
                {
                    "target": "orders",
                    "databaseMapping": {"orders": "orders_copy"},
                    "clean": True,
                    "restoreAccounts": True,
                },
                {
                    "target": "cache",
                    "host": "redis-2.shop.svc",
                    "port": 6380,
                    "credentialsSecret": "redis-2-auth",
                    "tls": {"mode": "require"},
                    "clean": True,
                    "restoreAccounts": False,
                },
            ],
            "targetReadyTimeout": "90s",
        },
        "dryRun": False,
        "existingResourcePolicy": "skip",
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--database-mapping", "orders"], "argument --database-mapping: expected TARGET:FROM=TO"),
        (["--database-clean", "Orders_DB"], "argument --database-clean: 'Orders_DB' is not a"),
        (["--database-host", "orders=pg:70000"], "argument --database-host: expected TARGET=HOST"),
        (["--database-tls", "orders=sometimes"], "TLS mode must be one of"),
        (["--target-ready-timeout", "48h"], "expected a duration from 0s to 24h"),
        (["--database-mapping", "o:a=x", "--database-mapping", "o:b=x"], "maps two databases"),
    ],
)
def test_restore_create_bad_database_option(
    local_cluster: LocalCluster, namespace: str, flags: list[str], message: str
) -> None:
    result = cli(local_cluster, "restore", "create", "r-bad", "--from-backup", "b1",
                 "-n", namespace, *flags)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert result.stdout == ""
    missing = kubectl(local_cluster, "get", "-n", namespace, "restorerequests.safehold.io",
                      "r-bad", check=False)  # fmt: skip
    assert missing.returncode != 0


# --- shrr, sizes (#16) ---------------------------------------------------------------------


def test_shrr_is_a_short_name_of_restore_requests(
    local_cluster: LocalCluster, namespace: str
) -> None:
    assert cli(local_cluster, "restore", "create", "r-short", "--from-backup", "b1",
               "-n", namespace).returncode == 0  # fmt: skip
    for short in ("shrr", "shrs", "restorereq"):
        out = kubectl(local_cluster, "get", short, "-n", namespace, "-o", "name").stdout
        assert out.split() == ["restorerequest.safehold.io/r-short"], short


def test_sizes_are_human_in_tables_and_raw_in_json(
    local_cluster: LocalCluster, namespace: str
) -> None:
    assert cli(local_cluster, "backup", "create", "big", "--from-policy", "nightly",
               "-n", namespace).returncode == 0  # fmt: skip
    status = finished(True, "Completed", "done") | {"sizeBytes": 2370508919}
    patch_status(local_cluster, namespace, "backups.safehold.io", "big", status)

    listed = cli(local_cluster, "backup", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert row[header.index("SIZE") :].split()[0] == "2.2GiB"
    described = cli(local_cluster, "backup", "describe", "big", "-n", namespace)
    assert "Size:           2.2GiB" in described.stdout
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        as_list = cli(local_cluster, "backup", "list", "-n", namespace, "-o", fmt)
        assert as_list.returncode == 0, as_list.stderr
        doc = load(as_list.stdout)
        assert (doc["kind"], len(doc["items"])) == ("List", 1)
        assert doc["items"][0]["status"]["sizeBytes"] == 2370508919
        one = load(cli(local_cluster, "backup", "describe", "big", "-n", namespace,
                       "-o", fmt).stdout)  # fmt: skip
        assert one["status"]["sizeBytes"] == 2370508919


# --- safehold verify: restore drills by hand (#17) ------------------------------------------

DRILLS = "backupverifications.safehold.io"


CONTENT_FAILED = "check content failed: configmaps/shop/app differs from the backup's index"


def drill_finished(passed: bool) -> dict[str, Any]:
    """The status the operator writes at the end of a drill."""
    reason = "Verified" if passed else "ChecksumMismatch"
    message = "3 check(s) passed: restore, repository, content" if passed else CONTENT_FAILED
    status = finished(passed, reason, message)
    content = {"name": "content", "result": "Passed", "durationSeconds": 0.4}
    if not passed:
        content |= {"result": "Failed", "reason": "ChecksumMismatch",
                    "message": "configmaps/shop/app differs from the backup's index"}  # fmt: skip
    status |= {
        "result": "Passed" if passed else "Failed",
        "backup": "b1",
        "policy": "nightly",
        "restoreSeconds": 80.2,
        "rto": "1m20s",
        "backupAgeSeconds": 7200.0,
        "scratchNamespaces": ["safehold-drill-abc12"],
        "dataSubset": "3/10",
        "scratchRemoved": passed,
        "checks": [
            {
                "name": "restore",
                "result": "Passed",
                "message": "12 objects",
                "durationSeconds": 80.2,
            },
            {"name": "repository", "result": "Passed", "durationSeconds": 2.5},
            content,
        ],
    }
    if not passed:
        status["keepUntil"] = "2099-01-01T00:00:00Z"
    return status


def test_verify_create_and_print(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(local_cluster, "verify", "create", "d1", "--from-policy", "nightly",
                 "--keep-on-failure", "2h", "--timeout", "30m", "--no-workloads",
                 "-n", namespace)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "backupverification.safehold.io/d1 created\n"
    spec = get(local_cluster, namespace, DRILLS, "d1")["spec"]
    assert spec["policyRef"] == {"name": "nightly"}
    assert (spec["keepOnFailure"], spec["timeout"]) == ("2h", "30m")
    assert spec["checks"]["workloads"] is False
    out = kubectl(local_cluster, "get", "shver", "-n", namespace, "-o", "name").stdout
    assert out.split() == ["backupverification.safehold.io/d1"]

    unnamed = cli(local_cluster, "verify", "create", "--from-backup", "b1", "-n", namespace)
    assert unnamed.returncode == 0, unnamed.stderr
    name = unnamed.stdout.split("/")[1].split()[0]
    assert name.startswith("b1-drill-")
    assert get(local_cluster, namespace, DRILLS, name)["spec"]["backupRef"] == {"name": "b1"}

    printed = cli(local_cluster, "verify", "create", "gitops", "--from-backup", "b1",
                  "-n", namespace, "-o", "yaml")  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["spec"] == {"backupRef": {"name": "b1"}}
    missing = kubectl(local_cluster, "get", "-n", namespace, DRILLS, "gitops", check=False)
    assert missing.returncode != 0
    kubectl(local_cluster, "apply", "-f", "-", stdin=printed.stdout)  # the server accepts it

    again = cli(local_cluster, "verify", "create", "d1", "--from-backup", "b1", "-n", namespace)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_verify_wait_names_the_failed_check(local_cluster: LocalCluster, namespace: str) -> None:
    thread = patch_later(local_cluster, namespace, DRILLS, "d-fail", drill_finished(False))
    result = cli(local_cluster, "verify", "create", "d-fail", "--from-backup", "b1",
                 "-n", namespace, "--wait")  # fmt: skip
    thread.join()
    assert result.returncode == 1, result.stderr
    assert result.stdout == "backupverification.safehold.io/d-fail created\n"
    lines = result.stderr.splitlines()
    assert "backupverification.safehold.io/d-fail: Running" in lines
    assert lines[-2:] == [
        f"error: backupverification.safehold.io/d-fail Failed (ChecksumMismatch: {CONTENT_FAILED})",
        "  check content failed (ChecksumMismatch): configmaps/shop/app differs from the "
        "backup's index",
    ]

    described = cli(local_cluster, "verify", "describe", "d-fail", "-n", namespace)
    assert described.returncode == 0, described.stderr
    for expected in [
        "Result:         Failed (failed: content)",
        "From backup:    b1",
        "RTO:            1m20s (measured restore time)",
        "RPO:            120m (age of the backup at the drill)",
        "Scratch:        safehold-drill-abc12 (kept for inspection until 2099-01-01T00:00:00Z",
        "restore      Passed                      80s        12 objects",
        "repository   Passed                      2.5s",
        "content      Failed   ChecksumMismatch   0.4s       configmaps/shop/app differs",
    ]:
        assert expected in described.stdout, f"{expected!r} not in:\n{described.stdout}"


def test_verify_wait_success_list_and_describe(local_cluster: LocalCluster, namespace: str) -> None:
    thread = patch_later(local_cluster, namespace, DRILLS, "d-ok", drill_finished(True))
    result = cli(local_cluster, "verify", "create", "d-ok", "--from-policy", "nightly",
                 "-n", namespace, "--wait", "--wait-timeout", "60s")  # fmt: skip
    thread.join()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "backupverification.safehold.io/d-ok Succeeded (Verified: 3 check(s) passed: restore, "
        "repository, content)",
        "  RTO 1m20s (restore time), RPO 120m (backup age)",
    ]
    assert cli(local_cluster, "verify", "create", "d-new", "--from-policy", "nightly",
               "-n", namespace).returncode == 0  # fmt: skip
    patch_status(local_cluster, namespace, DRILLS, "d-new", drill_finished(False))

    listed = cli(local_cluster, "verify", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "BACKUP", "RESULT", "RTO", "FAILED-CHECK", "AGE"]
    assert lines[1].split()[:5] == ["d-new", "b1", "Failed", "1m20s", "content"]
    assert lines[2].split()[:4] == ["d-ok", "b1", "Passed", "1m20s"]
    as_json = json.loads(cli(local_cluster, "verify", "ls", "-n", namespace, "-o", "json").stdout)
    assert [i["status"]["result"] for i in as_json["items"]] == ["Failed", "Passed"]
    described = cli(local_cluster, "verify", "describe", "d-ok", "-n", namespace)
    assert "Scratch:        safehold-drill-abc12 (removed)" in described.stdout
    assert "Policy:         nightly" in described.stdout
    empty = cli(local_cluster, "verify", "list", "-n", f"{namespace}-none")
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "No restore drills found" in empty.stderr


def test_verify_wait_timeout_exits_3(local_cluster: LocalCluster, namespace: str) -> None:
    result = cli(local_cluster, "verify", "create", "d-slow", "--from-backup", "b1",
                 "-n", namespace, "--wait", "--wait-timeout", "2s")  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "timed out after 2s" in result.stderr


def test_backup_list_and_describe_show_the_verdict(
    local_cluster: LocalCluster, namespace: str
) -> None:
    for name in ("good", "bad"):
        assert cli(local_cluster, "backup", "create", name, "--from-policy", "nightly",
                   "-n", namespace).returncode == 0  # fmt: skip
    for name, verdict in (("good", "Verified"), ("bad", "Corrupt")):
        status = finished(True, "Completed", "1 object") | {
            "verification": {"result": verdict, "time": _now(), "message": f"{name} backup"}
        }
        if name == "good":
            status["verification"]["verification"] = "d-ok"
        patch_status(local_cluster, namespace, "backups.safehold.io", name, status)
    listed = cli(local_cluster, "backup", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "VERDICT"]
    column = header.index("VERDICT")
    assert {row.split()[0]: row[column:].split()[0] for row in rows} == {
        "bad": "Corrupt", "good": "Verified",
    }  # fmt: skip
    described = cli(local_cluster, "backup", "describe", "bad", "-n", namespace).stdout
    assert "Verification:   Corrupt by the location's repository check, " in described
    assert "Verdict:        bad backup" in described
    described = cli(local_cluster, "backup", "describe", "good", "-n", namespace).stdout
    assert "Verification:   Verified by drill d-ok, " in described
