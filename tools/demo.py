"""`make demo`: Safehold on a local control plane, told as a short story with timings.

Today's chapter: a local Kubernetes control plane and S3 object store come up, the operator
starts, a BackupStorageLocation becomes Ready against the real bucket (the restic repository is
created in it), and a misconfigured one explains exactly what is wrong. Later capabilities
(backup, disaster, restore) extend this script.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.operator import OperatorProcess, install_crds

NAMESPACE = "demo"
BUCKET = "safehold-demo"
steps: list[tuple[str, float]] = []


@contextmanager
def step(title: str) -> Iterator[None]:
    print(f"\n==> {title}", flush=True)
    started = time.monotonic()
    yield
    steps.append((title, time.monotonic() - started))


def location_manifests(cluster: LocalCluster, name: str, secret_key: str) -> str:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-s3"},
            "stringData": {"accessKeyId": cluster.s3_access_key, "secretAccessKey": secret_key},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "repository-password"},
            "stringData": {"password": "demo-only-repository-password"},
        },
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": {
                "endpoint": cluster.s3_endpoint_url,
                "bucket": BUCKET,
                "prefix": "cluster-1",
                "forcePathStyle": True,
                "credentialsSecret": {"name": f"{name}-s3"},
                "repositoryPasswordSecret": {"name": "repository-password"},
            },
        },
    ]
    return yaml.safe_dump_all(docs)


def ready_condition(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    obj = json.loads(kubectl(cluster, "get", "-n", NAMESPACE, "bsl", name, "-o", "json").stdout)
    conditions = obj.get("status", {}).get("conditions", [])
    found: dict[str, Any] | None = next((c for c in conditions if c["type"] == "Ready"), None)
    return found


def show(cluster: LocalCluster, *args: str) -> None:
    print(kubectl(cluster, *args).stdout.rstrip())


def run(check: Callable[[bool, str], None]) -> None:
    with step("Start etcd, kube-apiserver, kube-controller-manager and SeaweedFS S3 (127.0.0.1)"):
        cluster = LocalCluster().start()
    try:
        for line in cluster.log_versions():
            print(f"    {line}")
        with step("Install the Safehold CRDs and start the operator"):
            install_crds(cluster)
            operator = OperatorProcess(cluster).start()
        try:
            story(cluster, check)
        finally:
            operator.stop()
    finally:
        cluster.stop()


def story(cluster: LocalCluster, check: Callable[[bool, str], None]) -> None:
    with step(f"Create the bucket {BUCKET!r} and a BackupStorageLocation pointing at it"):
        cluster.create_bucket(BUCKET)
        cluster.create_namespace(NAMESPACE)
        manifests = location_manifests(cluster, "primary", cluster.s3_secret_key)
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=manifests)
    with step("Wait for the operator to probe it: Ready, repository created"):
        cond = wait_for(lambda: ready_condition(cluster, "primary"), 60, "a Ready condition")
        show(cluster, "get", "-n", NAMESPACE, "bsl", "primary", "-o", "wide")
        keys = [
            o["Key"] for o in cluster.s3_client().list_objects_v2(Bucket=BUCKET).get("Contents", [])
        ]
        config = f"cluster-1/repositories/{NAMESPACE}/config"
        check(cond["status"] == "True", f"location Ready ({cond['reason']}: {cond['message']})")
        check(config in keys, f"restic repository created in the bucket ({config})")
    with step("A location with a wrong secret key explains itself"):
        manifests = location_manifests(cluster, "typo", "not-the-secret-key")
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=manifests)
        bad = wait_for(lambda: ready_condition(cluster, "typo"), 60, "a Ready condition")
        show(cluster, "get", "-n", NAMESPACE, "bsl", "-o", "wide")
        check(
            (bad["status"], bad["reason"]) == ("False", "InvalidCredentials"),
            f"wrong key reported as {bad['reason']}",
        )


def main() -> int:
    results: list[tuple[bool, str]] = []

    def check(ok: bool, what: str) -> None:
        results.append((ok, what))
        print(f"    [{'ok' if ok else 'FAILED'}] {what}")

    run(check)
    print("\n==> Summary")
    for title, seconds in steps:
        print(f"    {seconds:6.1f}s  {title}")
    for ok, what in results:
        print(f"    {'PASS' if ok else 'FAIL'}  {what}")
    failed = [what for ok, what in results if not ok]
    print("\nDemo " + ("FAILED: " + "; ".join(failed) if failed else "complete: all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
