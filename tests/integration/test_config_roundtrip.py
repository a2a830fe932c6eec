"""Cluster configuration: back up a namespace, lose it, restore it — against the real API
server (with its namespace and garbage-collector controllers), SeaweedFS and restic."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import apply, condition, get, location_docs, wait_complete, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE
from safehold.planning.restore import Entry, clean

pytestmark = pytest.mark.usefixtures("operator")
OPS = OPERATOR_NAMESPACE
CRD_GROUP = "demo.example.com"


def app_objects(ns: str) -> list[dict[str, Any]]:
    labels = {"app": "shop"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "labels": labels},
            "data": {"greeting": "grüß dich", "mode": "production"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-password", "labels": labels},
            "stringData": {"password": "s3cr3t-in-backup"},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "shop-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": ns}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "shop",
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.invalid/web:1.0",
                                "envFrom": [{"configMapRef": {"name": "settings"}}],
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": labels},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "blue"},
            "spec": {"color": "blue", "size": 3},
        },
        {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "red"},
            "spec": {"color": "red", "size": 5},
        },
    ]


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "color": {"type": "string"},
                                    "size": {"type": "integer"},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}

COMPARED = [
    ("configmap", "settings"),
    ("secret", "db-password"),
    ("serviceaccount", "shop"),
    ("role", "reader"),
    ("rolebinding", "shop-reader"),
    ("deployment", "web"),
    ("service", "web"),
    (f"widgets.{CRD_GROUP}", "blue"),
    (f"widgets.{CRD_GROUP}", "red"),
]


def snapshot_objects(cluster: LocalCluster, ns: str) -> dict[str, Any]:
    """The compared objects, cleaned of server-set fields the way a restore cleans them."""
    out = {}
    for kind, name in COMPARED:
        obj = get(cluster, ns, kind, name)
        entry = Entry("x", kind, obj["apiVersion"], obj["kind"], ns, name)
        cleaned = clean(entry, obj, {}, {})
        cleaned["metadata"].pop("namespace", None)
        cleaned["metadata"]["labels"].pop("safehold.io/restored-by", None)
        if kind == "service":  # the cluster allocates a new IP
            for key in ("clusterIP", "clusterIPs"):
                cleaned["spec"].pop(key, None)
        if kind == "deployment":
            cleaned["metadata"]["annotations"] = {}
        out[f"{kind}/{name}"] = cleaned
    return out


def delete_namespace_and_wait(cluster: LocalCluster, ns: str) -> None:
    kubectl(cluster, "delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: kubectl(cluster, "get", "namespace", ns, check=False).returncode != 0,
        120,
        f"namespace {ns} to be gone",
    )


@pytest.fixture(scope="module")
def widget_crd(local_cluster: LocalCluster) -> None:
    apply(local_cluster, "default", WIDGET_CRD)
    kubectl(local_cluster, "wait", "--for=condition=Established", f"crd/widgets.{CRD_GROUP}")


@pytest.fixture(scope="module")
def ops_location(local_cluster: LocalCluster) -> str:
    """A Ready location in the operator's namespace."""
    bucket = f"cfg-{uuid.uuid4().hex[:8]}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, OPS, *location_docs(local_cluster, "main", bucket))
    obj = wait_probed(local_cluster, OPS, "main")
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    return bucket


@pytest.fixture
def app(local_cluster: LocalCluster, widget_crd: None) -> Iterator[str]:
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    apply(local_cluster, ns, *app_objects(ns))
    yield ns
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


def backup(cluster: LocalCluster, name: str, spec: dict[str, Any], ns: str = OPS) -> dict[str, Any]:
    apply(
        cluster,
        ns,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    return wait_complete(cluster, ns, "backup", name)


def restore(
    cluster: LocalCluster, name: str, spec: dict[str, Any], ns: str = OPS
) -> dict[str, Any]:
    apply(
        cluster,
        ns,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    return wait_complete(cluster, ns, "restorerequest", name)


def restic_check(cluster: LocalCluster, bucket: str, namespace: str = OPS) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": cluster.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": cluster.s3_secret_key,
        "RESTIC_PASSWORD": "correct horse battery staple",
        "RESTIC_REPOSITORY": f"s3:{cluster.s3_endpoint}/{bucket}/repositories/{namespace}",
        "PATH": "/usr/bin:/bin",
    }
    from localcluster import binaries

    result = subprocess.run(
        [str(binaries.find("restic")), "-o", "s3.bucket-lookup=path", "--no-cache", "check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_round_trip_after_namespace_loss(
    local_cluster: LocalCluster, ops_location: str, app: str
) -> None:
    before = snapshot_objects(local_cluster, app)
    done = backup(
        local_cluster,
        f"rt-{app}",
        {
            "storageLocation": "main",
            "selection": {"namespaces": [app], "includeClusterResources": True},
        },
    )
    assert condition(done, "Succeeded")["status"] == "True", done["status"]  # type: ignore[index]
    status = done["status"]
    assert status["phase"] == "Succeeded"
    by_kind = status["resources"]["byKind"]
    assert by_kind["configmaps"] >= 1 and by_kind[f"widgets.{CRD_GROUP}"] == 2
    assert by_kind["namespaces"] == 1
    assert by_kind["customresourcedefinitions.apiextensions.k8s.io"] == 1
    assert status["storagePath"].endswith(f"backups/{OPS}/rt-{app}/backup.json")

    manifest = json.loads(
        local_cluster.s3_client()
        .get_object(Bucket=ops_location, Key=f"backups/{OPS}/rt-{app}/backup.json")["Body"]
        .read()
    )
    assert manifest["phase"] == "Succeeded"
    assert manifest["resources"]["sha256"] == status["resources"]["sha256"]
    assert "s3cr3t-in-backup" not in json.dumps(manifest)

    delete_namespace_and_wait(local_cluster, app)
    done = restore(local_cluster, f"rt-{app}", {"backupRef": {"name": f"rt-{app}"}})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counts"]["failed"] == 0
    after = snapshot_objects(local_cluster, app)
    assert after == before
    restored = get(local_cluster, app, "configmap", "settings")
    assert restored["metadata"]["labels"]["safehold.io/restored-by"] == f"rt-{app}"
    restic_check(local_cluster, ops_location)
