"""Disaster recovery: a brand-new control plane (new etcd) with a ReadOnly location on the
same bucket re-discovers the backups from storage alone and restores them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localcluster.cluster import LocalCluster
from localcluster.helpers import wait_for
from localcluster.objects import (
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess, install_crds
from localcluster.sample_app import CRD_GROUP, SECRET_VALUE, snapshot_objects

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def new_cluster() -> Iterator[LocalCluster]:
    """A second, empty control plane with its own operator; nothing shared but the bucket."""
    cluster = LocalCluster(node_agent=False).start()
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
    local_cluster: LocalCluster, ops_bucket: str, app: str, new_cluster: LocalCluster
) -> None:
    before = snapshot_objects(local_cluster, app)
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [app], "includeClusterResources": True},
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

    restored = create_and_wait(
        new_cluster, OPS, "RestoreRequest", "recover", {"backupRef": {"name": f"dr-{app}"}}
    )
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    assert snapshot_objects(new_cluster, app) == before
    assert get(new_cluster, None, "crd", f"widgets.{CRD_GROUP}")
    secret = get(new_cluster, app, "secret", "db-password")
    assert json.dumps(secret).count(SECRET_VALUE) == 0  # base64 in data, as the API returns it
    assert bucket_keys(local_cluster, ops_bucket) == stored, "a ReadOnly location wrote"


def _finished_backup(cluster: LocalCluster, name: str) -> dict[str, object] | None:
    from localcluster.helpers import kubectl

    result = kubectl(cluster, "get", "-n", OPS, "backup", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    obj: dict[str, object] = json.loads(result.stdout)
    return obj if condition(obj, "Complete") else None
