"""`make demo`: Safehold on a local control plane, told as a short story with timings.

A local Kubernetes control plane and S3 object store come up, the operator starts, a
BackupStorageLocation becomes Ready against the real bucket, and a misconfigured one explains
what is wrong. Then an application namespace (configuration, RBAC, a CRD with custom
resources, a PVC full of files, a PostgreSQL database) is backed up, destroyed together with
its CRD, storage and database, and restored from the bucket; the summary proves that objects,
files (hash, mode, owner, mtime) and rows (count and checksum) came back identical.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster.cluster import LocalCluster
from localcluster.databases import PostgreSQL
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import TEST_REPOSITORY_PASSWORD, create_and_wait
from localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, install_crds
from localcluster.sample_app import (
    CRD_GROUP,
    WIDGET_CRD,
    app_objects,
    delete_namespace_and_wait,
    restic_check,
    snapshot_objects,
)
from localcluster.trees import describe, make_tree
from safehold.planning.builders import DEFAULT_MOVER_UID

NAMESPACE = OPERATOR_NAMESPACE
APP = "shop"
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
            "stringData": {"password": TEST_REPOSITORY_PASSWORD},
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
    backup_and_restore(cluster, check)


def add_data(cluster: LocalCluster, pg: PostgreSQL) -> tuple[dict[str, Any], str]:
    """A PVC full of files and a PostgreSQL database with orders; returns their fingerprints."""
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "uploads", "labels": {"app": "shop"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kubectl(cluster, "apply", "-n", APP, "-f", "-", stdin=yaml.safe_dump(pvc))
    # Written by the application as one user; the mover, with no pod using the PVC, reads
    # as its default UID, so the files are that user's.
    uploads = cluster.pvc_path(APP, "uploads")
    make_tree(uploads, small_files=200, large_mib=16, owner=(DEFAULT_MOVER_UID,) * 2)
    pg.psql("CREATE DATABASE shop;")
    pg.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, item text, price numeric(8,2));"
        "INSERT INTO orders (item, price) SELECT 'Bücherregal Nr. ' || g, g % 500 + 0.99"
        " FROM generate_series(1, 20000) g;",
        "shop",
    )
    kubectl(
        cluster,
        "create",
        "secret",
        "generic",
        "shop-db",
        "-n",
        NAMESPACE,
        f"--from-literal=username={pg.user}",
        f"--from-literal=password={pg.password}",
    )
    return describe(cluster.pvc_path(APP, "uploads")), orders_fingerprint(pg)


def orders_fingerprint(pg: PostgreSQL) -> str:
    return pg.psql(
        "SELECT count(*) || ' rows, md5 ' || md5(string_agg(item || price, ',' ORDER BY id))"
        " FROM orders;",
        "shop",
    ).strip()


def backup_and_restore(cluster: LocalCluster, check: Callable[[bool, str], None]) -> None:
    with step(f"Deploy {APP!r}: config, RBAC, a CRD and widgets, a PVC with files, a database"):
        kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(WIDGET_CRD))
        kubectl(cluster, "wait", "--for=condition=Established", f"crd/widgets.{CRD_GROUP}")
        cluster.create_namespace(APP)
        kubectl(cluster, "apply", "-n", APP, "-f", "-", stdin=yaml.safe_dump_all(app_objects(APP)))
        pg = PostgreSQL().start()
        files_before, rows_before = add_data(cluster, pg)
        before = snapshot_objects(cluster, APP)
        show(cluster, "get", "-n", APP, "all,cm,secret,sa,role,rolebinding,widgets,pvc")
        print(f"    PVC uploads: {len(files_before)} entries; database shop: {rows_before}")
    try:
        story_of_loss(cluster, check, pg, before, files_before, rows_before)
    finally:
        pg.stop()


def story_of_loss(
    cluster: LocalCluster,
    check: Callable[[bool, str], None],
    pg: PostgreSQL,
    before: dict[str, Any],
    files_before: dict[str, Any],
    rows_before: str,
) -> None:
    with step("Back it up: objects, cluster-scoped dependencies, PVC data, database dump"):
        spec = {
            "storageLocation": "primary",
            "selection": {"namespaces": [APP], "includeClusterResources": True},
            "volumes": {"rules": [{"mode": "filesystem"}]},
            "databases": [
                {
                    "name": "shop-db",
                    "type": "postgresql",
                    "host": "127.0.0.1",
                    "port": pg.port,
                    "databases": ["shop"],
                    "credentialsSecret": {"name": "shop-db"},
                },
            ],
        }
        done = create_and_wait(cluster, NAMESPACE, "Backup", "shop-1", spec, timeout=300)
        show(cluster, "get", "-n", NAMESPACE, "backup", "shop-1", "-o", "wide")
        status = done["status"]
        check(
            status["phase"] == "Succeeded",
            f"backup {status['phase']}: {status['resources']['total']} objects, "
            f"{len(status['volumes'])} PVC, {len(status['databases'])} database target; "
            f"export sha256 {status['resources']['sha256'][:16]}…",
        )
    with step("Prove it restores before it is needed: a drill into a scratch namespace"):
        drill = create_and_wait(
            cluster,
            NAMESPACE,
            "BackupVerification",
            "shop-1-drill",
            {"backupRef": {"name": "shop-1"}, "checks": {"workloads": False}},
            timeout=600,
        )
        show(cluster, "get", "-n", NAMESPACE, "backupverification", "shop-1-drill", "-o", "wide")
        status = drill["status"]
        passed = [c["name"] for c in status["checks"] if c["result"] == "Passed"]
        check(
            status.get("result") == "Passed",
            f"drill {status.get('result')}: {', '.join(passed)} passed; restore took "
            f"{status.get('rto')}; its scratch namespace is being removed",
        )
    with step(f"Disaster: delete namespace {APP!r}, its storage, the CRD, and drop the database"):
        kubectl(cluster, "delete", "crd", f"widgets.{CRD_GROUP}")
        delete_namespace_and_wait(cluster, APP)
        shutil.rmtree(cluster.pvc_path(APP, "uploads"))
        pg.psql("DROP DATABASE shop;")
        gone = kubectl(cluster, "get", "namespace", APP, check=False).returncode != 0
        check(gone, f"namespace {APP!r}, its files and the database are gone")
    with step("Restore everything from the bucket"):
        done = create_and_wait(
            cluster,
            NAMESPACE,
            "RestoreRequest",
            "shop-1",
            {"backupRef": {"name": "shop-1"}},
            timeout=300,
        )
        show(cluster, "get", "-n", NAMESPACE, "restorerequest", "shop-1", "-o", "wide")
        check(done["status"]["phase"] == "Succeeded", f"restore {done['status']['phase']}")
    with step("Prove it: objects, every file's hash and metadata, row counts and checksums"):
        after = snapshot_objects(cluster, APP)
        same = sorted(k for k in before if before[k] == after.get(k))
        check(same == sorted(before), f"{len(same)}/{len(before)} objects identical after restore")
        files_after = describe(cluster.pvc_path(APP, "uploads"))
        check(
            files_after == files_before,
            f"PVC uploads: {len(files_after)} files, dirs and links identical (sha256, mode, "
            "owner, mtime)",
        )
        rows_after = orders_fingerprint(pg)
        check(rows_after == rows_before, f"database shop: {rows_after}")
        restic_check(cluster, BUCKET, NAMESPACE, prefix="cluster-1")
        check(True, "restic check: repository has no errors")


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
