"""Disaster recovery: a brand-new control plane (new etcd) with a ReadOnly location on the
same bucket re-discovers the backups from storage alone and restores them, the database
target at the server the backup recorded (manifest format 2), with no host given.

Before the real restore a dry run, with the namespace and the CRD gone, must predict it
exactly (objects whose namespace or CRD the restore creates first count as created) and keep
its per-object results although the location is ReadOnly. The operator namespace's
BackupPolicies, taken by a configuration backup (docs/disaster-recovery.md), come back and
schedule again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from localcluster.cluster import LocalCluster
from localcluster.databases import DatabaseUnavailable, PostgreSQL
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import (
    API,
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    secret,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess, install_crds
from localcluster.sample_app import CRD_GROUP, SECRET_VALUE, snapshot_objects
from safehold.planning.results import read_results

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL]:
    try:
        server = PostgreSQL().start()
    except DatabaseUnavailable as err:
        pytest.fail(f"PostgreSQL must run in the integration tier: {err}")
    yield server
    server.stop()


@pytest.fixture
def new_cluster() -> Iterator[LocalCluster]:
    """A second, empty control plane with its own operator and node agent (for the database
    restore's mover Job); nothing shared with the first but the bucket and the database."""
    cluster = LocalCluster().start()
    try:
        install_crds(cluster)
        operator = OperatorProcess(cluster).start()
        try:
            yield cluster
        finally:
            operator.stop()
    finally:
        cluster.stop()


def bucket_keys(cluster: LocalCluster, bucket: str) -> list[tuple[str, str]]:
    listing = cluster.s3_client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted((o["Key"], o["ETag"]) for o in listing)


def test_new_cluster_rediscovers_and_restores_from_the_bucket(
    local_cluster: LocalCluster,
    ops_bucket: str,
    app: str,
    new_cluster: LocalCluster,
    postgres: PostgreSQL,
) -> None:
    before = snapshot_objects(local_cluster, app)
    db = f"dr_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE DATABASE {db};")
    postgres.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000);", db)
    checksum = postgres.psql("SELECT sum(id) FROM t;", db)
    creds = secret("dr-pg", {"username": postgres.user, "password": postgres.password})
    apply(local_cluster, OPS, creds)
    config = _configuration_backup(local_cluster, app)
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [app], "includeClusterResources": True},
        "databases": [
            {
                "name": "pg",
                "type": "postgresql",
                "host": "127.0.0.1",
                "port": postgres.port,
                "databases": [db],
                "credentialsSecret": {"name": "dr-pg"},
            }
        ],
    }
    done = create_and_wait(local_cluster, OPS, "Backup", f"dr-{app}", spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    stored = bucket_keys(local_cluster, ops_bucket)

    # The new cluster reads the old cluster's bucket with the old cluster's credentials.
    docs = location_docs(
        local_cluster,
        "recovery",
        ops_bucket,
        access_mode="ReadOnly",
        endpoint=local_cluster.s3_endpoint,
    )
    apply(new_cluster, OPS, *docs)
    ready = wait_probed(new_cluster, OPS, "recovery")
    assert (condition(ready, "Ready") or {}).get("status") == "True", ready.get("status")

    found = wait_for(
        lambda: _finished_backup(new_cluster, f"dr-{app}"), 60, "the backup to be re-discovered"
    )
    assert found["status"]["phase"] == "Succeeded"
    assert found["status"]["resources"]["byKind"] == done["status"]["resources"]["byKind"]
    assert found["metadata"]["annotations"]["safehold.io/synced-from-storage"] == "recovery"

    # As the DR guide says, the database credentials Secret is re-created by hand; where the
    # server lives comes from the manifest alone (no host in the RestoreRequest).
    apply(new_cluster, OPS, creds)
    dry = _dry_run(new_cluster, f"dr-{app}")
    restore = {
        "backupRef": {"name": f"dr-{app}"},
        "databases": {"targets": [{"target": "pg", "databaseMapping": {db: f"{db}_dr"}}]},
    }
    restored = create_and_wait(new_cluster, OPS, "RestoreRequest", "recover", restore, timeout=240)
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    real = restored["status"]["counts"]
    # The same objects; only "default" ServiceAccounts the cluster makes meanwhile may turn
    # a predicted create into a skip.
    predicted = (dry["created"] + dry["skipped"], dry["failed"])
    assert predicted == (real["created"] + real["skipped"], real["failed"]), (dry, real)
    assert real["created"] >= dry["created"] - 1, (dry, real)
    assert [d["result"] for d in restored["status"]["databases"]] == ["Succeeded"]
    assert postgres.psql("SELECT sum(id) FROM t;", f"{db}_dr") == checksum
    assert snapshot_objects(new_cluster, app) == before
    assert get(new_cluster, None, "crd", f"widgets.{CRD_GROUP}")
    restored_secret = get(new_cluster, app, "secret", "db-password")
    assert (
        json.dumps(restored_secret).count(SECRET_VALUE) == 0
    )  # base64 in data, as the API returns it
    assert bucket_keys(local_cluster, ops_bucket) == stored, "a ReadOnly location wrote"
    _schedules_resume(new_cluster, local_cluster, config)
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", f"nightly-{app}", "--wait=false")


def _configuration_backup(cluster: LocalCluster, app: str) -> str:
    """A BackupPolicy of the operator's namespace and the Backup of Safehold's configuration
    the DR guide recommends (policies only: no Secret values)."""
    policy = {
        "apiVersion": API,
        "kind": "BackupPolicy",
        "metadata": {"name": f"nightly-{app}", "labels": {"dr-config": app}},
        "spec": {
            "schedule": "0 3 * * *",
            "storageLocation": "main",
            "selection": {"namespaces": [app], "includedResources": ["configmaps"]},
        },
    }
    apply(cluster, OPS, policy)
    spec = {
        "storageLocation": "main",
        "selection": {
            "namespaces": [OPS],
            "includedResources": ["backuppolicies.safehold.io"],
            "labelSelector": {"matchLabels": {"dr-config": app}},
        },
    }
    done = create_and_wait(cluster, OPS, "Backup", f"dr-config-{app}", spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["resources"]["byKind"] == {"backuppolicies.safehold.io": 1}
    return f"dr-config-{app}"


def _dry_run(cluster: LocalCluster, backup: str) -> dict[str, int]:
    """A dry run on the empty cluster: nothing fails that the real restore would create, and
    the results are kept in a ConfigMap (the location is ReadOnly)."""
    done = create_and_wait(
        cluster, OPS, "RestoreRequest", "recover-dry", {"backupRef": {"name": backup},
                                                        "dryRun": True},
    )  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["counts"]["failed"] == 0, status
    assert not status.get("resultsPath")
    results = read_results(get(cluster, OPS, "configmap", status["resultsConfigMap"]))
    assert results["dryRun"] is True
    unvalidated = {i["resource"] for i in results["items"] if i.get("validated") is False}
    assert {"widgets.demo.example.com", "configmaps"} <= unvalidated, unvalidated
    widget = next(i for i in results["items"] if i["resource"] == "widgets.demo.example.com")
    assert "creates its CustomResourceDefinition first" in widget["note"], widget
    counts: dict[str, int] = status["counts"]
    return counts


def _schedules_resume(new: LocalCluster, old: LocalCluster, config: str) -> None:
    """The new cluster gets a location of the old one's name (its Secrets made by hand, as
    the guide says), restores the configuration backup, and the policy schedules again."""
    bucket = f"dr-new-{uuid.uuid4().hex[:6]}"
    new.create_bucket(bucket)
    apply(new, OPS, *location_docs(new, "main", bucket))
    wait_probed(new, OPS, "main")
    done = create_and_wait(new, OPS, "RestoreRequest", "recover-config",
                           {"backupRef": {"name": config}})  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counts"]["created"] == 1, done["status"]
    policy = next(
        p
        for p in json.loads(kubectl(new, "get", "-n", OPS, "backuppolicies", "-o", "json").stdout)[
            "items"
        ]
        if p["metadata"]["labels"].get("dr-config")
    )

    def scheduled() -> dict[str, object] | None:
        obj = get(new, OPS, "backuppolicy", policy["metadata"]["name"])
        ready = condition(obj, "Ready") or {}
        return obj if ready.get("reason") == "Scheduled" else None

    found = wait_for(scheduled, 60, "the restored policy to schedule")
    assert found["status"]["nextScheduleTime"], found["status"]  # type: ignore[index]


def _finished_backup(cluster: LocalCluster, name: str) -> dict[str, object] | None:
    from localcluster.helpers import kubectl

    result = kubectl(cluster, "get", "-n", OPS, "backup", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    obj: dict[str, object] = json.loads(result.stdout)
    return obj if condition(obj, "Complete") else None
