"""The generated CRDs on the real API server: accepted, explained, and guarding their input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(local_cluster: LocalCluster, namespace: str, example: Path) -> None:
    kubectl(local_cluster, "apply", "-n", namespace, "-f", str(example))
    for doc in yaml.safe_load_all(example.read_text()):
        got = json.loads(
            kubectl(
                local_cluster,
                "get",
                "-n",
                namespace,
                doc["kind"],
                doc["metadata"]["name"],
                "-o",
                "json",
            ).stdout
        )
        if doc["kind"] != "Secret":
            assert (
                got["spec"].items()
                >= {k: v for k, v in doc["spec"].items() if not isinstance(v, dict | list)}.items()
            )


def _apply(cluster: LocalCluster, namespace: str, manifest: dict[str, object]) -> str:
    result = kubectl(
        cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest), check=False
    )
    assert result.returncode != 0, f"expected rejection, got: {result.stdout}"
    return result.stderr


def _location(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {
        "bucket": "bucket-a",
        "credentialsSecret": {"name": "creds"},
        "repositoryPasswordSecret": {"name": "pw"},
    }
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": "bad"},
        "spec": {k: v for k, v in (base | spec).items() if v is not None},
    }


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"accessMode": "WriteOnly"}, "spec.accessMode", "Unsupported value"),
        ({"bucket": 42}, "spec.bucket", "must be of type string"),
        ({"bucket": None}, "spec.bucket", "Required value"),
        ({"repositoryPasswordSecret": None}, "spec.repositoryPasswordSecret", "Required value"),
        ({"syncPeriod": "daily"}, "spec.syncPeriod", "should match"),
        ({"endpoint": "minio:9000"}, "spec.endpoint", "should match"),
        ({"forcePathStyle": "yes"}, "spec.forcePathStyle", "must be of type boolean"),
    ],
)
def test_invalid_location_is_rejected_naming_the_field(
    local_cluster: LocalCluster, namespace: str, spec: dict[str, object], field: str, words: str
) -> None:
    error = _apply(local_cluster, namespace, _location(**spec))
    assert field in error
    assert words in error


def test_backup_needs_exactly_one_source(local_cluster: LocalCluster, namespace: str) -> None:
    both = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "both"},
        "spec": {"policyRef": {"name": "p"}, "storageLocation": "loc"},
    }
    assert "set exactly one of policyRef or storageLocation" in _apply(
        local_cluster, namespace, both
    )


def test_database_target_needs_host_or_service(local_cluster: LocalCluster, namespace: str) -> None:
    backup = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "db"},
        "spec": {
            "storageLocation": "loc",
            "databases": [{"name": "pg", "type": "postgresql"}],
        },
    }
    error = _apply(local_cluster, namespace, backup)
    assert "spec.databases[0]" in error
    assert "set exactly one of host or service" in error
    backup["spec"]["databases"][0]["type"] = "oracle"  # type: ignore[index]
    assert "spec.databases[0].type" in _apply(local_cluster, namespace, backup)


@pytest.mark.parametrize(
    ("kind", "spec", "change"),
    [
        ("Backup", {"policyRef": {"name": "nightly"}}, {"policyRef": {"name": "other"}}),
        ("RestoreRequest", {"backupRef": {"name": "b1"}}, {"dryRun": True}),
    ],
)
def test_one_shot_specs_are_immutable(
    local_cluster: LocalCluster,
    namespace: str,
    kind: str,
    spec: dict[str, object],
    change: dict[str, object],
) -> None:
    manifest = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "once"},
        "spec": spec,
    }
    kubectl(local_cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    result = kubectl(
        local_cluster,
        "patch",
        "-n",
        namespace,
        kind,
        "once",
        "--type=merge",
        "-p",
        json.dumps({"spec": change}),
        check=False,
    )
    assert result.returncode != 0
    assert "spec is immutable" in result.stderr


def test_kubectl_explain_shows_the_model_docstrings(local_cluster: LocalCluster) -> None:
    out = kubectl(local_cluster, "explain", "backupstoragelocation.spec.forcePathStyle").stdout
    assert "Address the bucket as endpoint/bucket" in out
    out = kubectl(local_cluster, "explain", "restorerequest.spec.existingResourcePolicy").stdout
    assert "skip leaves them" in out


def test_short_names_category_and_printer_columns(
    local_cluster: LocalCluster, namespace: str
) -> None:
    kubectl(local_cluster, "apply", "-n", namespace, "-f", str(REPO / "examples/backup.yaml"))
    out = kubectl(local_cluster, "get", "safehold", "-n", namespace).stdout
    assert "backup.safehold.io/before-upgrade" in out
    wide = kubectl(local_cluster, "get", "shbk", "-n", namespace, "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[:2] == ["NAME", "PHASE"]
    assert "MESSAGE" in header


def _kind(kind: str, spec: dict[str, object], name: str = "bad") -> dict[str, object]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


POLICY = {"storageLocation": "loc"}


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (_location(syncPeriod="100000000h"), "should match"),
        (_location(syncPeriod="25h"), "must be a duration from 10s to 24h"),
        (_location(syncPeriod="1s"), "must be a duration from 10s to 24h"),
        (_location(region="*"), "spec.region"),
        (_location(bucket="Bad_Bucket"), "spec.bucket"),
        (_location(bucket="a..b"), "not a valid S3 bucket name"),
        (_location(prefix="team/../other"), "may not contain . or .. segments"),
        (_location(prefix="/abs"), "spec.prefix"),
        (_location(objectLock={"retentionDays": 7}), "objectLock"),
        (_kind("Backup", {"storageLocation": "loc", "ttl": "100000000h"}), "spec.ttl"),
        (_kind("Backup", {"storageLocation": "loc", "ttl": "99999h"}), "from 1m to 87840h"),
        (_kind("BackupPolicy", {**POLICY, "rpo": "99999h9999h"}), "from 1s to 8784h"),
        (
            _kind("BackupPolicy", {**POLICY, "retention": {"failedBackupGracePeriod": "9999h"}}),
            "from 0s to 8784h",
        ),
        (_kind("BackupPolicy", {**POLICY, "copyLocation": "other"}), "copyLocation"),
        (
            _kind(
                "BackupPolicy",
                {**POLICY, "verification": {"schedule": "@daily", "keepOnFailure": "9999h"}},
            ),
            "from 1m to 720h",
        ),
        (
            _kind("BackupVerification", {"backupRef": {"name": "b"}, "policyRef": {"name": "p"}}),
            "set exactly one of backupRef or policyRef",
        ),
        (_kind("BackupPolicy", POLICY, name="p" * 64), "at most 63 characters"),
        (
            _kind("Backup", {"storageLocation": "loc", "volumes": {"moverTimeout": "999h"}}),
            "from 1m to 168h",
        ),
        (
            _kind(
                "Backup",
                {
                    "storageLocation": "loc",
                    "volumes": {"moverResources": {"limits": {"cpu": "lots"}}},
                },
            ),
            "spec.volumes.moverResources.limits.cpu",
        ),
        (
            _kind(
                "Backup",
                {"storageLocation": "loc", "volumes": {"moverResources": {"limits": {"gpu": "1"}}}},
            ),
            "resource names are cpu, memory",
        ),
        (
            _kind(
                "RestoreRequest",
                {"backupRef": {"name": "b"}, "databases": {"targetReadyTimeout": "48h"}},
            ),
            "from 0s to 24h",
        ),
    ],
)
def test_out_of_bounds_values_are_rejected_at_admission(
    local_cluster: LocalCluster, namespace: str, manifest: dict[str, object], words: str
) -> None:
    error = _apply(local_cluster, namespace, manifest)
    assert words in error, error
