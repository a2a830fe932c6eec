"""Scheduled repository checks of a location and Corrupt backups, against the real API server,
SeaweedFS and restic: a pack file deleted from the bucket is noticed (location Degraded, the
Backup Corrupt in status and catalog), the index is repaired so that the next backup of the
same data uploads it again and restores byte for byte; a Corrupt backup is never a policy's
latest restore nor the good backup retention keeps."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.csi_standin import CsiStandIn
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import (
    API,
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess
from localcluster.sample_app import delete_namespace_and_wait
from localcluster.trees import describe, make_tree
from safehold.planning.builders import DEFAULT_MOVER_UID

pytestmark = pytest.mark.usefixtures("operator")
JSON = dict[str, Any]
MOVER = (DEFAULT_MOVER_UID, DEFAULT_MOVER_UID)


def checked_location(cluster: LocalCluster, name: str, bucket: str, **check: Any) -> JSON:
    """A Ready location `name` in the operator's namespace on its own bucket, re-probed every
    10 s (so probe and check write its status side by side), checked once a day."""
    cluster.create_bucket(bucket)
    docs = location_docs(cluster, name, bucket)
    docs[-1]["spec"] |= {"syncPeriod": "10s", "repositoryCheck": {"interval": "24h", **check}}
    apply(cluster, OPS, *docs)
    obj = wait_probed(cluster, OPS, name)
    assert (condition(obj, "Ready") or {}).get("status") == "True", obj.get("status")
    return obj


def set_interval(cluster: LocalCluster, name: str, interval: str) -> None:
    patch = json.dumps({"spec": {"repositoryCheck": {"interval": interval}}})
    kubectl(cluster, "patch", "-n", OPS, "backupstoragelocation", name, "--type=merge", "-p", patch)


def wait_check(
    cluster: LocalCluster, name: str, result: str, runs: int, timeout: float = 150
) -> JSON:
    """The location once its `runs`-th (or a later) check ended with `result`."""

    def done() -> JSON | None:
        obj = get(cluster, OPS, "backupstoragelocation", name)
        check = (obj.get("status") or {}).get("repositoryCheck") or {}
        return obj if check.get("runs", 0) >= runs and check.get("result") == result else None

    return wait_for(done, timeout, f"a repository check of {name} with result {result}")


def events_for(cluster: LocalCluster, name: str) -> list[JSON]:
    out = kubectl(
        cluster, "get", "events", "-n", OPS, "--field-selector",
        f"involvedObject.name={name}", "-o", "json",
    )  # fmt: skip
    items: list[JSON] = json.loads(out.stdout)["items"]
    return items


def manifest(cluster: LocalCluster, bucket: str, backup: str) -> JSON:
    body = cluster.s3_client().get_object(Bucket=bucket, Key=f"backups/{OPS}/{backup}/backup.json")
    doc: JSON = json.loads(body["Body"].read())
    return doc


def objects(cluster: LocalCluster, bucket: str, prefix: str) -> list[JSON]:
    pages = (
        cluster.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return [o for page in pages for o in page.get("Contents", [])]


def verdict(cluster: LocalCluster, backup: str) -> JSON:
    found: JSON = (get(cluster, OPS, "backup", backup).get("status") or {}).get(
        "verification"
    ) or {}
    return found


@pytest.fixture
def data_ns(local_cluster: LocalCluster, csi: CsiStandIn) -> Iterator[str]:
    ns = f"rc-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    yield ns
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


def pvc() -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def backup_volume(cluster: LocalCluster, location: str, ns: str, name: str) -> JSON:
    spec = {
        "storageLocation": location,
        "selection": {"namespaces": [ns]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    done = create_and_wait(cluster, OPS, "Backup", name, spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def restore_volume(cluster: LocalCluster, ns: str, backup: str) -> JSON:
    """Lose the namespace and the PVC's storage, then restore `backup` into it."""
    delete_namespace_and_wait(cluster, ns)
    shutil.rmtree(cluster.pvc_path(ns, "data"), ignore_errors=True)
    spec = {"backupRef": {"name": backup}}
    done = create_and_wait(cluster, OPS, "RestoreRequest", f"r-{backup}", spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def test_a_lost_pack_is_found_marked_repaired_and_uploaded_again(
    local_cluster: LocalCluster, data_ns: str, operator: OperatorProcess
) -> None:
    bucket, loc = f"rc-{data_ns}", f"chk-{data_ns}"
    checked_location(local_cluster, loc, bucket, readDataRuns=2)
    apply(local_cluster, data_ns, pvc())
    data = local_cluster.pvc_path(data_ns, "data")
    make_tree(data, small_files=20, large_mib=4, owner=MOVER)
    original = describe(data)
    first = backup_volume(local_cluster, loc, data_ns, f"b1-{data_ns}")
    [volume] = first["status"]["volumes"]
    repository = f"namespace-repositories/{OPS}/{data_ns}"
    assert volume["repository"] == repository

    # One pack file of the backup's data is lost from the bucket.
    packs = objects(local_cluster, bucket, f"{repository}/data/")
    lost = max(packs, key=lambda o: int(o["Size"]))
    local_cluster.s3_client().delete_object(Bucket=bucket, Key=lost["Key"])
    index = {o["Key"] for o in objects(local_cluster, bucket, f"{repository}/index/")}

    set_interval(local_cluster, loc, "10s")
    obj = wait_check(local_cluster, loc, "Damaged", 1)
    # restic repair index replaced the index files that named the lost pack.
    assert not index & {o["Key"] for o in objects(local_cluster, bucket, f"{repository}/index/")}
    status = obj["status"]
    degraded = condition(obj, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "RepositoryDamaged")
    message = degraded["message"]
    assert f"repository {repository} is damaged" in message, message
    assert lost["Key"].rsplit("/", 1)[1] in message  # restic's own words: the pack is missing
    assert f"Backups marked Corrupt: b1-{data_ns}" in message, message
    assert "The index is repaired" in message, message
    assert (condition(obj, "Ready") or {}).get("status") == "True"  # backups go on
    check = status["repositoryCheck"]
    assert check["readDataSubset"] == "1/2"
    assert check["corruptBackups"] == [f"b1-{data_ns}"]
    # The Backup is Corrupt, in its status and in its catalog entry in the bucket.
    found = verdict(local_cluster, f"b1-{data_ns}")
    assert found["result"] == "Corrupt", found
    assert f"repository check of BackupStorageLocation {OPS}/{loc}" in found["message"]
    assert volume["snapshotId"][:8] in found["message"]
    assert "verification" not in found  # no drill behind it
    stored = manifest(local_cluster, bucket, f"b1-{data_ns}")["verification"]
    assert (stored["result"], stored["message"]) == ("Corrupt", found["message"])
    reasons = {e["reason"] for e in events_for(local_cluster, loc)}
    assert "RepositoryDamaged" in reasons, reasons
    assert "Corrupt" in {e["reason"] for e in events_for(local_cluster, f"b1-{data_ns}")}
    metrics = operator.metrics()
    assert f'safehold_location_degraded{{location="{loc}",namespace="{OPS}"}} 1.0' in metrics
    assert f'safehold_location_corrupt_backups{{location="{loc}",namespace="{OPS}"}} 1.0' in (
        metrics
    )

    # The next backup of the same, unchanged data uploads the lost data again ...
    second = backup_volume(local_cluster, loc, data_ns, f"b2-{data_ns}")
    [again] = second["status"]["volumes"]
    assert again["bytesAdded"] >= 4 << 20, again  # not deduplicated against the lost pack
    # ... so the next check finds the repository whole: Degraded False, b1 whole again.
    runs = get(local_cluster, OPS, "backupstoragelocation", loc)["status"]["repositoryCheck"]
    obj = wait_check(local_cluster, loc, "Passed", runs["runs"] + 1)
    degraded = condition(obj, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("False", "CheckPassed")
    assert (condition(obj, "Ready") or {}).get("status") == "True"
    assert obj["status"]["repositoryCheck"]["lastPassedTime"]
    lifted = verdict(local_cluster, f"b1-{data_ns}")
    assert lifted["result"] == "Verified", lifted
    assert "repository check" in lifted["message"]
    assert "not a restore drill" in lifted["message"]
    assert manifest(local_cluster, bucket, f"b1-{data_ns}")["verification"]["result"] == "Verified"
    set_interval(local_cluster, loc, "24h")

    # Both restore byte for byte: the new backup, and the one that had lost its data.
    restore_volume(local_cluster, data_ns, f"b2-{data_ns}")
    assert describe(data) == original
    restore_volume(local_cluster, data_ns, f"b1-{data_ns}")
    assert describe(data) == original
    names = [f"backup/b1-{data_ns}", f"backup/b2-{data_ns}"]
    names += [f"restorerequest/r-b1-{data_ns}", f"restorerequest/r-b2-{data_ns}"]
    kubectl(local_cluster, "delete", "-n", OPS, *names, "--wait=false", check=False)
    kubectl(local_cluster, "delete", "-n", OPS, "backupstoragelocation", loc, "--wait=false")


# ---- Corrupt backups in restores and retention ------------------------------------------


def settings(ns: str, value: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns},
        "data": {"value": value},
    }


def policy_backup(cluster: LocalCluster, policy: str, name: str) -> JSON:
    done = create_and_wait(cluster, OPS, "Backup", name, {"policyRef": {"name": policy}})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def policy_backups(cluster: LocalCluster, policy: str) -> list[str]:
    out = kubectl(
        cluster, "get", "-n", OPS, "backups", "-l", f"safehold.io/policy={policy}", "-o", "json"
    )
    return sorted(b["metadata"]["name"] for b in json.loads(out.stdout)["items"])


def completed(backup: JSON) -> datetime:
    return datetime.fromisoformat(backup["status"]["completionTime"].replace("Z", "+00:00"))


def test_a_corrupt_backup_is_skipped_by_latest_restores_and_retention(
    local_cluster: LocalCluster, namespace: str
) -> None:
    bucket, loc, name = f"rcb-{namespace}", f"chk-{namespace}", f"p-{namespace}"
    checked_location(local_cluster, loc, bucket, readDataRuns=0)
    policy = {
        "apiVersion": API,
        "kind": "BackupPolicy",
        "metadata": {"name": name},
        "spec": {
            "storageLocation": loc,
            "selection": {"namespaces": [namespace], "includedResources": ["configmaps"]},
            "retention": {"keepLast": 2},
        },
    }
    apply(local_cluster, OPS, policy)
    apply(local_cluster, namespace, settings(namespace, "v1"))
    first = policy_backup(local_cluster, name, f"{name}-1")
    apply(local_cluster, namespace, settings(namespace, "v2"))
    time.sleep(2)  # the pack files of the second backup are newer than the first's end
    policy_backup(local_cluster, name, f"{name}-2")

    # Only the second backup's data is lost: every pack file written after the first.
    repository = f"repositories/{OPS}"
    newer = [
        o
        for o in objects(local_cluster, bucket, f"{repository}/data/")
        if o["LastModified"] > completed(first)
    ]
    assert newer
    for obj in newer:
        local_cluster.s3_client().delete_object(Bucket=bucket, Key=obj["Key"])
    set_interval(local_cluster, loc, "10s")
    obj = wait_check(local_cluster, loc, "Damaged", 1)
    set_interval(local_cluster, loc, "24h")  # no further check: the verdict stays
    assert obj["status"]["repositoryCheck"]["corruptBackups"] == [f"{name}-2"], obj["status"]
    assert "readDataSubset" not in obj["status"]["repositoryCheck"]  # structure only
    assert verdict(local_cluster, f"{name}-2")["result"] == "Corrupt"
    assert verdict(local_cluster, f"{name}-1") == {}

    # The policy's latest restore takes the older good backup.
    target = f"{namespace}-back"
    spec = {"policyRef": {"name": name}, "namespaceMapping": {namespace: target}}
    done = create_and_wait(local_cluster, OPS, "RestoreRequest", f"latest-{namespace}", spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["backup"] == f"{name}-1"
    assert get(local_cluster, target, "configmap", "settings")["data"] == {"value": "v1"}
    kubectl(local_cluster, "delete", "namespace", target, "--wait=false")

    # Named explicitly, the Corrupt backup is restored as far as it goes, with a warning.
    spec = {"backupRef": {"name": f"{name}-2"}, "namespaceMapping": {namespace: f"{target}2"}}
    done = create_and_wait(local_cluster, OPS, "RestoreRequest", f"named-{namespace}", spec)
    warnings = done["status"].get("warnings") or []
    assert any(
        w.startswith(f"Backup {name}-2 is Corrupt (verdict of the repository check at ")
        for w in warnings
    ), done["status"]
    assert done["status"]["phase"] == "Failed", done["status"]  # its export index was lost

    # Retention (keepLast 2) after the next run keeps the older good backup: the Corrupt one
    # is not one of the two it keeps (and, newer than the oldest kept, stays for now).
    policy_backup(local_cluster, name, f"{name}-3")

    def retention_ran() -> bool:
        status = get(local_cluster, OPS, "backuppolicy", name).get("status") or {}
        return bool(status.get("lastRetentionBackup") == f"{name}-3")

    wait_for(retention_ran, 30, "retention to run after the third backup")
    assert policy_backups(local_cluster, name) == [f"{name}-1", f"{name}-2", f"{name}-3"]
    assert manifest(local_cluster, bucket, f"{name}-1")["phase"] == "Succeeded"
    restores = [f"restorerequest/latest-{namespace}", f"restorerequest/named-{namespace}"]
    kubectl(local_cluster, "delete", "-n", OPS, *restores, "--wait=false", check=False)
    kubectl(local_cluster, "delete", "-n", OPS, "backup", "-l", f"safehold.io/policy={name}",
            "--wait=false", check=False)  # fmt: skip
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")
    kubectl(local_cluster, "delete", "-n", OPS, "backupstoragelocation", loc, "--wait=false")


def test_a_read_only_location_is_checked_but_never_repaired(
    local_cluster: LocalCluster, namespace: str
) -> None:
    """Disaster recovery: a ReadOnly location re-discovers a backup whose data was lost; its
    check marks it Corrupt in the cluster only, and writes nothing to the bucket (no repair,
    no lock, the catalog entry untouched)."""
    bucket, writer, reader = f"rco-{namespace}", f"w-{namespace}", f"ro-{namespace}"
    checked_location(local_cluster, writer, bucket)
    apply(local_cluster, namespace, settings(namespace, "v1"))
    spec = {
        "storageLocation": writer,
        "selection": {"namespaces": [namespace], "includedResources": ["configmaps"]},
    }
    name = f"b-{namespace}"
    done = create_and_wait(local_cluster, OPS, "Backup", name, spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    kubectl(local_cluster, "delete", "-n", OPS, "backup", name)  # the cluster is lost
    repository = f"repositories/{OPS}"
    for obj in objects(local_cluster, bucket, f"{repository}/data/"):
        local_cluster.s3_client().delete_object(Bucket=bucket, Key=obj["Key"])
    before = sorted(o["Key"] for o in objects(local_cluster, bucket, ""))
    catalog = manifest(local_cluster, bucket, name)

    docs = location_docs(local_cluster, reader, bucket, access_mode="ReadOnly")
    docs[-1]["spec"]["repositoryCheck"] = {"interval": "10s", "readDataRuns": 1}
    apply(local_cluster, OPS, *docs)

    def corrupt() -> JSON | None:
        found = kubectl(local_cluster, "get", "-n", OPS, "backup", name, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        body: JSON = json.loads(found.stdout)
        status = body.get("status") or {}
        ok = status.get("storageLocation") == reader
        return (
            body if ok and (status.get("verification") or {}).get("result") == "Corrupt" else None
        )

    body = wait_for(corrupt, 120, f"Backup {name} re-discovered through {reader} and Corrupt")
    assert f"BackupStorageLocation {OPS}/{reader}" in body["status"]["verification"]["message"]
    obj = get(local_cluster, OPS, "backupstoragelocation", reader)
    degraded = condition(obj, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "RepositoryDamaged")
    assert "The location is ReadOnly: the repository was not repaired" in degraded["message"]
    assert obj["status"]["repositoryCheck"]["readDataSubset"] == "1/1"
    # Nothing was written to the bucket: no repaired index, no lock, the same catalog entry.
    assert sorted(o["Key"] for o in objects(local_cluster, bucket, "")) == before
    assert manifest(local_cluster, bucket, name) == catalog
    kubectl(local_cluster, "delete", "-n", OPS, "backup", name, "--wait=false", check=False)
    for location in (reader, writer):
        kubectl(local_cluster, "delete", "-n", OPS, "backupstoragelocation", location,
                "--wait=false")  # fmt: skip
