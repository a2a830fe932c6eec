"""A small sample application (configuration, RBAC, a CRD and custom resources) for tests and
`make demo`, and the comparison of its objects before and after a restore."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from localcluster import binaries
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import TEST_REPOSITORY_PASSWORD, get
from safehold.planning.restore import Entry, clean

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

JSON = dict[str, Any]
CRD_GROUP = "demo.example.com"
LABELS = {"app": "shop"}
SECRET_VALUE = "s3cr3t-in-backup"  # noqa: S105 - sample data that must stay encrypted


def app_objects(ns: str) -> list[JSON]:
    """ConfigMap, Secret, ServiceAccount, Role(Binding), Deployment, Service, two Widgets."""
    pod = {
        "serviceAccountName": "shop",
        "containers": [
            {
                "name": "web",
                "image": "registry.invalid/web:1.0",
                "envFrom": [{"configMapRef": {"name": "settings"}}],
            }
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "labels": LABELS},
            "data": {"greeting": "grüß dich", "mode": "production"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-password", "labels": LABELS},
            "stringData": {"password": SECRET_VALUE},
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
            "metadata": {"name": "web", "labels": LABELS},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": LABELS},
                "template": {"metadata": {"labels": LABELS}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": LABELS},
            "spec": {"selector": LABELS, "ports": [{"port": 80, "targetPort": 8080}]},
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


WIDGET_CRD: JSON = {
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
    ("configmaps", "settings"),
    ("secrets", "db-password"),
    ("serviceaccounts", "shop"),
    ("roles.rbac.authorization.k8s.io", "reader"),
    ("rolebindings.rbac.authorization.k8s.io", "shop-reader"),
    ("deployments.apps", "web"),
    ("services", "web"),
    (f"widgets.{CRD_GROUP}", "blue"),
    (f"widgets.{CRD_GROUP}", "red"),
]


def snapshot_objects(cluster: LocalCluster, ns: str) -> dict[str, JSON]:
    """The compared objects, cleaned of server-set fields the way a restore cleans them, and
    of what a new cluster legitimately sets anew (Service IPs, Deployment revision)."""
    out = {}
    for resource, name in COMPARED:
        obj = get(cluster, ns, resource, name)
        entry = Entry("x", resource, obj["apiVersion"], obj["kind"], ns, name)
        cleaned = clean(entry, obj, {}, {})
        cleaned["metadata"].pop("namespace", None)
        cleaned["metadata"]["labels"].pop("safehold.io/restored-by", None)
        if not cleaned["metadata"]["labels"]:
            del cleaned["metadata"]["labels"]
        cleaned["metadata"].pop("annotations", None)
        out[f"{resource}/{name}"] = cleaned
    return out


def delete_namespace_and_wait(cluster: LocalCluster, ns: str, timeout: float = 120) -> None:
    """Delete a namespace and wait until the namespace controller has removed it."""
    kubectl(cluster, "delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: kubectl(cluster, "get", "namespace", ns, check=False).returncode != 0,
        timeout,
        f"namespace {ns} to be gone",
    )


def restic_cli(
    cluster: LocalCluster,
    bucket: str,
    namespace: str,
    *args: str,
    prefix: str = "",
    password: str = TEST_REPOSITORY_PASSWORD,
) -> str:
    """Run restic against one namespace's repository in a bucket made by location_docs();
    returns stdout, raises AssertionError with stderr on failure."""
    path = "/".join(p for p in (prefix, "repositories", namespace) if p)
    env = {
        "AWS_ACCESS_KEY_ID": cluster.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": cluster.s3_secret_key,
        "RESTIC_PASSWORD": password,
        "RESTIC_REPOSITORY": f"s3:{cluster.s3_endpoint}/{bucket}/{path}",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [str(binaries.find("restic")), "-o", "s3.bucket-lookup=path", "--no-cache", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"restic {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def restic_check(
    cluster: LocalCluster,
    bucket: str,
    namespace: str,
    prefix: str = "",
    password: str = TEST_REPOSITORY_PASSWORD,
) -> None:
    """`restic check` of one namespace's repository in a bucket made by location_docs()."""
    restic_cli(cluster, bucket, namespace, "check", prefix=prefix, password=password)
