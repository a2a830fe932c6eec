"""Restore drills (#17) against the real API server, SeaweedFS and restic: a drill of a good
backup passes and leaves nothing behind; it fails naming the check when a pack file is
corrupted, an object is deleted from the backup's index, a probe fails or the manifest is
gone; a Corrupt backup is never what a policy's drill picks."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.databases import DatabaseUnavailable, PostgreSQL
from localcluster.helpers import kubectl
from localcluster.objects import apply, create_and_wait, get, secret, wait_for
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import TEST_REPOSITORY_PASSWORD

pytestmark = pytest.mark.usefixtures("operator", "ops_bucket")
JSON = dict[str, Any]


@pytest.fixture
def ns(local_cluster: LocalCluster, csi: object) -> Iterator[str]:
    """A small application: configuration, an exposed Service, a CronJob and a PVC."""
    name = f"drl-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(name)
    argo = {"app.kubernetes.io/instance": "shop", "team": "a"}
    apply(
        local_cluster,
        name,
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "settings", "labels": argo,
                      "annotations": {"argocd.argoproj.io/tracking-id": "shop:/ConfigMap"}},
         "data": {"mode": "production"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
         "stringData": {"token": "s3cr3t"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"type": "NodePort", "selector": {"app": "web"},
                  "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    )  # fmt: skip
    data = local_cluster.pvc_path(name, "data")
    (data / "orders.csv").write_text("".join(f"{i},item-{i}\n" for i in range(2000)))
    (data / "sub").mkdir()
    (data / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 512)
    yield name
    kubectl(local_cluster, "delete", "namespace", name, "--wait=false", check=False)


def _backup(cluster: LocalCluster, ns: str, name: str, **extra: Any) -> JSON:
    spec = {"storageLocation": "main", "selection": {"namespaces": [ns]},
            "volumes": {"rules": [{"mode": "filesystem"}]}}  # fmt: skip
    if "policyRef" in extra:
        spec = {}  # the policy's content
    spec.update(extra)
    done = create_and_wait(cluster, OPS, "Backup", name, spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def _drill(cluster: LocalCluster, name: str, spec: JSON, timeout: float = 300) -> JSON:
    return create_and_wait(cluster, OPS, "BackupVerification", name, spec, timeout=timeout)


def _checks(drill: JSON) -> dict[str, JSON]:
    return {c["name"]: c for c in drill["status"]["checks"]}


def _namespace_exists(cluster: LocalCluster, name: str) -> bool:
    found = kubectl(cluster, "get", "namespace", name, "-o", "name", check=False)
    return found.returncode == 0


def _manifest(cluster: LocalCluster, bucket: str, backup: str) -> JSON:
    key = f"backups/{OPS}/{backup}/backup.json"
    doc: JSON = json.loads(cluster.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return doc


def _verdict(cluster: LocalCluster, backup: str) -> str | None:
    status = get(cluster, OPS, "backup", backup).get("status") or {}
    return (status.get("verification") or {}).get("result")


def test_a_drill_of_a_good_backup_passes_records_rto_and_rpo_and_leaves_nothing(
    local_cluster: LocalCluster, ns: str, ops_bucket: str
) -> None:
    _backup(local_cluster, ns, f"good-{ns}")
    drill = _drill(
        local_cluster,
        f"good-{ns}",
        {"backupRef": {"name": f"good-{ns}"}, "checks": {"readDataRuns": 1}},
    )
    status = drill["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == "Passed", status
    checks = _checks(drill)
    for name in ("manifest", "restore", "content", "repository"):
        assert checks[name]["result"] == "Passed", checks[name]
        assert checks[name]["durationSeconds"] >= 0
    assert checks["workloads"]["result"] == "Skipped", checks["workloads"]
    assert "2 file(s)" in checks["content"]["message"], checks["content"]
    assert status["restoreSeconds"] > 0, status
    assert status["rto"], status
    assert status["backupAgeSeconds"] >= 0, status
    assert status["dataSubset"] == "1/1", status  # readDataRuns 1: all data read
    # Everything it created is gone (said once the namespaces are); the original is untouched.
    removed = wait_for(
        lambda: (
            get(local_cluster, OPS, "backupverification", f"good-{ns}")["status"].get(
                "scratchRemoved"
            )
            or None
        ),
        180,
        "the scratch namespace to be removed",
    )
    assert removed is True
    for scratch in status["scratchNamespaces"]:
        assert scratch.startswith("shv-"), scratch
        assert not _namespace_exists(local_cluster, scratch)
    assert (local_cluster.pvc_path(ns, "data") / "orders.csv").exists()
    # The verdict is on the Backup and in its catalog entry.
    assert _verdict(local_cluster, f"good-{ns}") == "Verified"
    manifest = _manifest(local_cluster, ops_bucket, f"good-{ns}")
    assert manifest["verification"]["result"] == "Verified", manifest.get("verification")
    assert manifest["verification"]["verification"] == f"good-{ns}"


def test_a_failed_probe_fails_the_drill_and_keeps_a_harmless_scratch_namespace(
    local_cluster: LocalCluster, ns: str
) -> None:
    _backup(local_cluster, ns, f"probe-{ns}")
    spec = {
        "backupRef": {"name": f"probe-{ns}"},
        "keepOnFailure": "1h",
        "checks": {
            "repository": False,
            "probes": [
                {"name": "ok", "image": "busybox", "command": ["sh", "-c", "exit 0"]},
                {"name": "orders", "image": "busybox", "command": ["sh", "-c", "exit 3"]},
            ],
        },
    }
    drill = _drill(local_cluster, f"probe-{ns}", spec)
    status = drill["status"]
    assert status["phase"] == "Failed", status
    assert status["result"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert failed["reason"] == "ProbeFailed", failed
    assert "probe:orders" in failed["message"], failed
    checks = _checks(drill)
    assert checks["probe:ok"]["result"] == "Passed", checks["probe:ok"]
    assert checks["probe:orders"]["result"] == "Failed", checks["probe:orders"]
    assert checks["repository"]["result"] == "Skipped"
    assert _verdict(local_cluster, f"probe-{ns}") == "VerificationFailed"

    # Kept for inspection: restricted, isolated, labelled as Safehold's, GitOps-free copies.
    assert status["scratchRemoved"] is False, status
    assert status["keepUntil"], status
    (scratch,) = status["scratchNamespaces"]
    namespace = get(local_cluster, "", "namespace", scratch)
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    assert labels["safehold.io/internal"] == "true", labels
    policy = get(local_cluster, scratch, "networkpolicy", "safehold-drill-isolation")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    settings = get(local_cluster, scratch, "configmap", "settings")
    assert settings["data"] == {"mode": "production"}
    assert "app.kubernetes.io/instance" not in settings["metadata"]["labels"]
    assert settings["metadata"]["labels"]["team"] == "a"
    assert "argocd.argoproj.io/tracking-id" not in (settings["metadata"].get("annotations") or {})
    assert get(local_cluster, scratch, "service", "web")["spec"]["type"] == "ClusterIP"
    restored = local_cluster.pvc_path(scratch, "data") / "orders.csv"
    assert restored.read_bytes() == (local_cluster.pvc_path(ns, "data") / "orders.csv").read_bytes()

    # Deleting the drill removes what it kept.
    kubectl(local_cluster, "delete", "backupverification", "-n", OPS, f"probe-{ns}")
    wait_for(lambda: not _namespace_exists(local_cluster, scratch), 180, f"{scratch} gone")


def _repository_env(cluster: LocalCluster, bucket: str, key: str, password: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": cluster.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": cluster.s3_secret_key,
        "RESTIC_PASSWORD": password,
        "RESTIC_REPOSITORY": f"s3:{cluster.s3_endpoint}/{bucket}/{key}",
        "PATH": "/usr/bin:/bin",
    }


def _restic(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(binaries.find("restic")), "-o", "s3.bucket-lookup=path", "--no-cache", *args],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _newest_pack(cluster: LocalCluster, bucket: str, key: str) -> str:
    listed = cluster.s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{key}/data/")
    packs = sorted(listed["Contents"], key=lambda o: o["LastModified"])
    return str(packs[-1]["Key"])


def test_a_corrupted_pack_fails_the_repository_check_and_marks_the_backup_corrupt(
    local_cluster: LocalCluster, ns: str, ops_bucket: str
) -> None:
    policy = f"p-{ns}"
    apply(
        local_cluster,
        OPS,
        {"apiVersion": "safehold.io/v1alpha1", "kind": "BackupPolicy",
         "metadata": {"name": policy},
         "spec": {"storageLocation": "main", "selection": {"namespaces": [ns]},
                  "volumes": {"rules": [{"mode": "filesystem"}]}}},
    )  # fmt: skip
    _backup(local_cluster, ns, f"old-{ns}", policyRef={"name": policy})
    (local_cluster.pvc_path(ns, "data") / "new.bin").write_bytes(uuid.uuid4().bytes * 40000)
    new = f"new-{ns}"
    done = _backup(local_cluster, ns, new, policyRef={"name": policy})
    (volume,) = done["status"]["volumes"]
    pack = _newest_pack(local_cluster, ops_bucket, volume["repository"])
    s3 = local_cluster.s3_client()
    size = len(s3.get_object(Bucket=ops_bucket, Key=pack)["Body"].read())
    s3.put_object(Bucket=ops_bucket, Key=pack, Body=b"\0" * size)

    drill = _drill(
        local_cluster,
        f"corrupt-{ns}",
        {"backupRef": {"name": new}, "checks": {"readDataRuns": 1}},
    )
    assert drill["status"]["phase"] == "Failed", drill["status"]
    repository = _checks(drill)["repository"]
    assert repository["result"] == "Failed", repository
    assert repository["reason"] == "RepositoryDamaged", repository
    assert _verdict(local_cluster, new) == "Corrupt"
    assert _manifest(local_cluster, ops_bucket, new)["verification"]["result"] == "Corrupt"

    # The policy's next drill never picks the Corrupt backup: the older one it is.
    nxt = _drill(
        local_cluster,
        f"next-{ns}",
        {"policyRef": {"name": policy}, "checks": {"repository": False}},
    )
    assert nxt["status"]["backup"] == f"old-{ns}", nxt["status"]
    assert nxt["status"]["result"] == "Passed", nxt["status"]
    assert _verdict(local_cluster, new) == "Corrupt"  # a pass of another backup changes nothing
    kubectl(local_cluster, "delete", "backuppolicy", "-n", OPS, policy, check=False)


def test_an_object_deleted_from_the_index_fails_the_content_check(
    local_cluster: LocalCluster, ns: str, ops_bucket: str, tmp_path: Path
) -> None:
    name = f"idx-{ns}"
    _backup(local_cluster, ns, name)
    manifest = _manifest(local_cluster, ops_bucket, name)
    env = _repository_env(
        local_cluster, ops_bucket, f"repositories/{OPS}", TEST_REPOSITORY_PASSWORD
    )
    root = manifest["export"]["root"]
    snapshot = manifest["resources"]["snapshotId"]
    _restic(env, "restore", f"{snapshot}:{root}", "--target", str(tmp_path / "export"))
    index_file = tmp_path / "export" / manifest["export"]["indexPath"]
    index = json.loads(index_file.read_text())
    index["objects"] = [o for o in index["objects"] if o["name"] != "settings"]
    index_file.write_text(json.dumps(index))
    out = _restic(env, "backup", "--json", str(tmp_path / "export"))
    summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
    manifest["resources"]["snapshotId"] = summary["snapshot_id"]
    manifest["export"]["root"] = str(tmp_path / "export")
    local_cluster.s3_client().put_object(
        Bucket=ops_bucket,
        Key=f"backups/{OPS}/{name}/backup.json",
        Body=json.dumps(manifest).encode(),
    )

    drill = _drill(
        local_cluster, name, {"backupRef": {"name": name}, "checks": {"repository": False}}
    )
    content = _checks(drill)["content"]
    assert content["result"] == "Failed", content
    assert content["reason"] == "IndexChecksumMismatch", content
    assert drill["status"]["phase"] == "Failed"
    assert _verdict(local_cluster, name) == "Corrupt"


def test_a_removed_manifest_fails_the_manifest_check(
    local_cluster: LocalCluster, ns: str, ops_bucket: str
) -> None:
    name = f"gone-{ns}"
    _backup(local_cluster, ns, name)
    local_cluster.s3_client().delete_object(
        Bucket=ops_bucket, Key=f"backups/{OPS}/{name}/backup.json"
    )
    drill = _drill(local_cluster, name, {"backupRef": {"name": name}})
    manifest = _checks(drill)["manifest"]
    assert manifest["result"] == "Failed", manifest
    assert manifest["reason"] == "ManifestMissing", manifest
    assert drill["status"]["phase"] == "Failed"
    assert not drill["status"].get("scratchNamespaces"), drill["status"]
    assert _verdict(local_cluster, name) == "Corrupt"


def test_a_policy_schedules_drills_records_the_last_and_judges_the_rto(
    local_cluster: LocalCluster, ns: str
) -> None:
    policy = f"sched-{ns}"
    body = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": policy, "annotations": {"safehold.io/trigger": "first"}},
        "spec": {
            "storageLocation": "main",
            "selection": {"namespaces": [ns]},
            "volumes": {"rules": [{"mode": "filesystem"}]},
            "verification": {
                "schedule": "* * * * *",
                "rtoTarget": "1s",
                "successfulHistoryLimit": 1,
                "checks": {"repository": False},
            },
        },
    }
    apply(local_cluster, OPS, body)
    try:
        drill = wait_for(lambda: _finished_drill(local_cluster, policy), 240, "a scheduled drill")
        assert drill["status"]["result"] == "Passed", drill["status"]
        assert drill["metadata"]["labels"]["safehold.io/policy"] == policy
        assert drill["metadata"]["ownerReferences"][0]["name"] == policy
        assert drill["spec"]["checks"]["repository"] is False  # the policy's settings, copied
        # The policy records it; a restore slower than the 1s target makes it not Ready.
        status = wait_for(
            lambda: _with_last_drill(local_cluster, policy, drill["metadata"]["name"]),
            60,
            "the policy to record the drill",
        )
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False", ready
        assert ready["reason"] == "RtoTargetMissed", ready
        assert status["rtoMet"] is False
        assert status["nextVerificationTime"]
    finally:
        kubectl(local_cluster, "delete", "backuppolicy", "-n", OPS, policy, check=False)


def _finished_drill(cluster: LocalCluster, policy: str) -> JSON | None:
    out = kubectl(
        cluster, "get", "backupverifications", "-n", OPS, "-l", f"safehold.io/policy={policy}",
        "-o", "json",
    ).stdout  # fmt: skip
    done = [d for d in json.loads(out)["items"] if (d.get("status") or {}).get("completionTime")]
    return done[0] if done else None


def _with_last_drill(cluster: LocalCluster, policy: str, drill: str) -> JSON | None:
    status: JSON = get(cluster, OPS, "backuppolicy", policy).get("status") or {}
    last = status.get("lastVerification") or {}
    return status if last.get("name") == drill and status.get("rtoMet") is not None else None


def test_a_drill_interrupted_by_an_operator_crash_starts_over_and_cleans_up(
    local_cluster: LocalCluster, ns: str, operator: Any
) -> None:
    name = f"crash-{ns}"
    _backup(local_cluster, ns, name)
    slow = {"name": "slow", "image": "busybox", "command": ["sh", "-c", "sleep 20"]}
    apply(
        local_cluster,
        OPS,
        {"apiVersion": "safehold.io/v1alpha1", "kind": "BackupVerification",
         "metadata": {"name": name},
         "spec": {"backupRef": {"name": name},
                  "checks": {"repository": False, "probes": [slow]}}},
    )  # fmt: skip

    def probing() -> list[str] | None:
        status = get(local_cluster, OPS, "backupverification", name).get("status") or {}
        message = next(
            (c["message"] for c in status.get("conditions") or [] if c["type"] == "Succeeded"), ""
        )
        return status.get("scratchNamespaces") if "probe" in message else None

    first = wait_for(probing, 180, "the drill to run its probe")
    operator.crash_and_restart()
    from localcluster.objects import wait_complete

    done = wait_complete(local_cluster, OPS, "backupverification", name, timeout=300)
    assert done["status"]["result"] == "Passed", done["status"]
    assert done["status"]["scratchNamespaces"] != first  # a new attempt, new namespaces
    for scratch in [*first, *done["status"]["scratchNamespaces"]]:
        wait_for(lambda s=scratch: not _namespace_exists(local_cluster, s), 180, f"{scratch} gone")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL]:
    try:
        server = PostgreSQL().start()
    except DatabaseUnavailable as err:
        pytest.fail(f"PostgreSQL must run in the integration tier: {err}")
    yield server
    server.stop()


def test_a_drill_checks_the_database_and_drops_its_scratch_database(
    local_cluster: LocalCluster, ns: str, postgres: PostgreSQL
) -> None:
    db = f"shop_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE DATABASE {db}")
    postgres.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);"
        " INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 1500) g;",
        db,
    )
    creds = {"username": postgres.user, "password": postgres.password}
    apply(local_cluster, OPS, secret(f"{ns}-pg", creds))
    target = {"name": "pg", "type": "postgresql", "host": "127.0.0.1", "port": postgres.port,
              "databases": [db], "credentialsSecret": {"name": f"{ns}-pg"}}  # fmt: skip
    name = f"db-{ns}"
    _backup(local_cluster, ns, name, databases=[target])
    probes = [
        {"name": "enough-orders", "query": "SELECT count(*) FROM orders", "expect": ">= 1000"}
    ]
    good = _drill(
        local_cluster,
        name,
        {"backupRef": {"name": name},
         "checks": {"repository": False,
                    "databases": {"targets": [{"target": "pg", "probes": probes}]}}},
    )  # fmt: skip
    check = _checks(good)["database:pg"]
    assert check["result"] == "Passed", check
    assert good["status"]["result"] == "Passed", good["status"]
    # The drill's scratch database is gone; the original is untouched.
    listed = postgres.psql("SELECT datname FROM pg_database", "postgres").split()
    assert db in listed
    assert not [d for d in listed if d.startswith(f"{db}_drill")], listed
    assert not good["status"].get("scratchDatabases"), good["status"]

    impossible = [
        {"name": "a-million", "query": "SELECT count(*) FROM orders", "expect": ">= 1000000"}
    ]
    bad = _drill(
        local_cluster,
        f"{name}-bad",
        {"backupRef": {"name": name},
         "checks": {"repository": False,
                    "databases": {"targets": [{"target": "pg", "probes": impossible}]}}},
    )  # fmt: skip
    failed = _checks(bad)["database:pg"]
    assert failed["result"] == "Failed", failed
    assert failed["reason"] == "ProbeFailed", failed
    assert "a-million" in failed["message"], failed
    assert bad["status"]["phase"] == "Failed"
    assert _verdict(local_cluster, name) == "VerificationFailed"
    listed = postgres.psql("SELECT datname FROM pg_database", "postgres").split()
    assert not [d for d in listed if d.startswith(f"{db}_drill")], listed
