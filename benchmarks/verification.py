"""Benchmark: a restore drill against a plain restore of the same backup, in the same run.

Runs the real local control plane (tools/localcluster) with the operator as a process, the
CSI stand-in, SeaweedFS and a real PostgreSQL on 127.0.0.1. One backup holds `--volume-mb` of
volume data (random, incompressible, in 4 MiB files) and a PostgreSQL database of about
`--db-mb`. Then, alternating twice (the best of each counts):
- a RestoreRequest of the backup into a mapped namespace, the database into another name on
  the same server: the baseline;
- a BackupVerification of the same backup: the restore into a scratch namespace with restic
  reading every restored file back, the objects' checksums, `restic check` of 1/N of the
  pack files (N = `--read-data-runs`, default 10 as in the API), the database restored into a
  scratch database and its row counts compared, then everything removed.
Prints both times and their ratio (goal: drill <= 1.3x the restore alone) and the drill's own
restore time (its RTO) next to it.

Usage: python benchmarks/verification.py [--volume-mb 1024] [--db-mb 1024] [--read-data-runs 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from localcluster.cluster import LocalCluster
from localcluster.csi_standin import CsiStandIn
from localcluster.databases import PostgreSQL
from localcluster.helpers import kubectl
from localcluster.objects import apply, create_and_wait, location_docs, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess, install_crds

FILE_MB = 4


def populate_volume(cluster: LocalCluster, ns: str, megabytes: int) -> None:
    apply(
        cluster,
        ns,
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                  "resources": {"requests": {"storage": f"{max(megabytes // 1024, 1) * 2}Gi"}}}},
    )  # fmt: skip
    root = cluster.pvc_path(ns, "data")
    for i in range(max(megabytes // FILE_MB, 1)):
        (root / f"part-{i:05d}.bin").write_bytes(os.urandom(FILE_MB << 20))


def populate_database(pg: PostgreSQL, megabytes: int) -> None:
    pg.psql("CREATE DATABASE bench")
    rows = megabytes * 1024 * 1024 // 120  # about 120 bytes per row on disk
    pg.psql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, item text, amount numeric);"
        f" INSERT INTO orders SELECT g, md5(g::text) || md5((g * 7)::text), g % 1000"
        f" FROM generate_series(1, {rows}) g;",
        "bench",
        timeout=3600,
    )


def timed(fn: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume-mb", type=int, default=1024)
    parser.add_argument("--db-mb", type=int, default=1024)
    parser.add_argument("--read-data-runs", type=int, default=10)
    args = parser.parse_args()
    with LocalCluster() as cluster:
        install_crds(cluster)
        operator = OperatorProcess(cluster).start()
        csi = CsiStandIn(cluster).start()
        pg = PostgreSQL().start()
        try:
            return run(cluster, pg, args)
        finally:
            pg.stop()
            csi.stop()
            operator.stop()


def run(cluster: LocalCluster, pg: PostgreSQL, args: argparse.Namespace) -> int:
    bucket = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.create_bucket(bucket)
    apply(cluster, OPS, *location_docs(cluster, "main", bucket))
    wait_probed(cluster, OPS, "main")
    ns = f"drill-bench-{uuid.uuid4().hex[:4]}"
    cluster.create_namespace(ns)
    print(f"populating {args.volume_mb} MiB of volume data and a ~{args.db_mb} MB database")
    populate_volume(cluster, ns, args.volume_mb)
    populate_database(pg, args.db_mb)
    creds = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bench-pg"},
             "stringData": {"username": pg.user, "password": pg.password}}  # fmt: skip
    apply(cluster, OPS, creds)
    target = {"name": "pg", "type": "postgresql", "host": "127.0.0.1", "port": pg.port,
              "databases": ["bench"], "credentialsSecret": {"name": "bench-pg"},
              "postgresql": {"includeGlobals": False}}  # fmt: skip
    spec = {"storageLocation": "main", "selection": {"namespaces": [ns]},
            "volumes": {"rules": [{"mode": "filesystem"}]}, "databases": [target]}  # fmt: skip
    seconds, backup = timed(lambda: create_and_wait(cluster, OPS, "Backup", "bench", spec, 7200))
    assert backup["status"]["phase"] == "Succeeded", backup["status"]
    print(f"backup: {seconds:.1f}s")

    restores, drills, rtos = [], [], []
    for attempt in range(2):
        copy = f"{ns}-copy{attempt}"
        restore_spec = {
            "backupRef": {"name": "bench"},
            "namespaceMapping": {ns: copy},
            "databases": {
                "targets": [{"target": "pg", "databaseMapping": {"bench": f"copy{attempt}"}}]
            },
        }
        seconds, done = timed(
            lambda s=restore_spec, a=attempt: create_and_wait(
                cluster, OPS, "RestoreRequest", f"bench-{a}", s, 7200
            )
        )
        assert done["status"]["phase"] == "Succeeded", done["status"]
        restores.append(seconds)
        pg.psql(f"DROP DATABASE copy{attempt}")
        kubectl(cluster, "delete", "namespace", copy, "--wait=false")
        drill_spec = {
            "backupRef": {"name": "bench"},
            "timeout": "6h",
            "checks": {"readDataRuns": args.read_data_runs, "workloads": False},
        }
        seconds, drill = timed(
            lambda s=drill_spec, a=attempt: create_and_wait(
                cluster, OPS, "BackupVerification", f"bench-{a}", s, 7200
            )
        )
        assert drill["status"]["result"] == "Passed", drill["status"]
        drills.append(seconds)
        rtos.append(drill["status"]["restoreSeconds"])
        print(f"round {attempt + 1}: restore {restores[-1]:.1f}s, drill {drills[-1]:.1f}s "
              f"(its restore {rtos[-1]:.1f}s)")  # fmt: skip
        for check in drill["status"]["checks"]:
            took = check.get("durationSeconds", 0)
            print(f"    {check['name']:<22} {check['result']:<8} {took:7.1f}s")
    best_restore, best_drill = min(restores), min(drills)
    print()
    print(f"volume {args.volume_mb} MiB + database ~{args.db_mb} MB")
    print(f"readDataRuns {args.read_data_runs}")
    print(f"plain restore (baseline): {best_restore:8.1f}s")
    ratio = best_drill / best_restore
    print(f"drill:                    {best_drill:8.1f}s   ratio {ratio:.2f}x (goal <= 1.3x)")
    print(f"drill's restore (RTO):    {min(rtos):8.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
