"""Cluster configuration: back up a namespace, lose it, restore it — against the real API
server (with its namespace and garbage-collector controllers), SeaweedFS and restic."""

from __future__ import annotations

import json

import pytest

from localcluster.cluster import LocalCluster
from localcluster.objects import condition, create_and_wait, get
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import (
    CRD_GROUP,
    SECRET_VALUE,
    delete_namespace_and_wait,
    restic_check,
    snapshot_objects,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_round_trip_after_namespace_loss(
    local_cluster: LocalCluster, ops_bucket: str, app: str
) -> None:
    before = snapshot_objects(local_cluster, app)
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [app], "includeClusterResources": True},
    }
    done = create_and_wait(local_cluster, OPS, "Backup", f"rt-{app}", spec)
    assert (condition(done, "Succeeded") or {}).get("status") == "True", done["status"]
    status = done["status"]
    assert status["phase"] == "Succeeded"
    by_kind = status["resources"]["byKind"]
    assert by_kind["configmaps"] >= 1
    assert by_kind[f"widgets.{CRD_GROUP}"] == 2
    assert by_kind["namespaces"] == 1
    assert by_kind["customresourcedefinitions.apiextensions.k8s.io"] == 1
    assert status["storagePath"].endswith(f"backups/{OPS}/rt-{app}/backup.json")

    key = f"backups/{OPS}/rt-{app}/backup.json"
    manifest = json.loads(
        local_cluster.s3_client().get_object(Bucket=ops_bucket, Key=key)["Body"].read()
    )
    assert manifest["phase"] == "Succeeded"
    assert manifest["resources"]["sha256"] == status["resources"]["sha256"]
    assert manifest["versions"]["kubernetes"] == "v1.35.4"
    assert SECRET_VALUE not in json.dumps(manifest)

    delete_namespace_and_wait(local_cluster, app)
    done = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"rt-{app}", {"backupRef": {"name": f"rt-{app}"}}
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counts"]["failed"] == 0
    assert snapshot_objects(local_cluster, app) == before
    restored = get(local_cluster, app, "configmap", "settings")
    assert restored["metadata"]["labels"]["safehold.io/restored-by"] == f"rt-{app}"
    restic_check(local_cluster, ops_bucket, OPS)
