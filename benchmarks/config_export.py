"""Benchmark: export and restore of 5,000 ConfigMaps and Secrets across 200 namespaces.

Runs on the real local control plane (tools/localcluster). Prints, side by side in one run:
- Safehold's export (discovery, paged raw-JSON lists, one file per object, restic upload) vs
  `kubectl get configmaps,secrets -A -o json` of the same objects, as a ratio;
- the restore of all of them into 200 mapped namespaces (goal: under 60 s);
- the operator's resident memory before and at its peak (goal: growth under 64 MiB).

Usage: python benchmarks/config_export.py [--namespaces 200] [--per-namespace 25]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import (
    apply,
    condition,
    create_and_wait,
    location_docs,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess, install_crds

LABEL = "bench.safehold.io/set"


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


def populate(cluster: LocalCluster, namespaces: int, per_ns: int, tag: str) -> list[str]:
    names = [f"bench-{tag}-{i:03d}" for i in range(namespaces)]
    docs: list[str] = []
    for ns in names:
        docs.append(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n"
            f"    {LABEL}: {tag}\n"
        )
    kubectl(cluster, "apply", "-f", "-", stdin="---\n".join(docs), timeout=300)
    payload = "x" * 512
    for start in range(0, namespaces, 20):
        docs = []
        for ns in names[start : start + 20]:
            for j in range(per_ns):
                kind = "ConfigMap" if j % 2 == 0 else "Secret"
                field = "data" if kind == "ConfigMap" else "stringData"
                docs.append(
                    f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: obj-{j:03d}\n"
                    f"  namespace: {ns}\n{field}:\n  value: {payload}{j}\n"
                )
        kubectl(cluster, "create", "-f", "-", stdin="---\n".join(docs), timeout=600)
    return names


def timed(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return time.monotonic() - started


def seconds_in(message: str) -> float:
    found = re.search(r"in ([0-9.]+)s", message)
    return float(found.group(1)) if found else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--per-namespace", type=int, default=25)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:4]
    with LocalCluster(node_agent=False) as cluster:
        install_crds(cluster)
        operator = OperatorProcess(cluster).start()
        try:
            bucket = "bench"
            cluster.create_bucket(bucket)
            apply(cluster, OPS, *location_docs(cluster, "bench", bucket))
            wait_probed(cluster, OPS, "bench")
            print(f"creating {args.namespaces * args.per_namespace} objects ...", flush=True)
            names = populate(cluster, args.namespaces, args.per_namespace, tag)
            pid = operator.process.pid
            assert pid is not None
            rss_before = rss_kib(pid, "VmRSS")

            kubectl_bin = str(binaries.find("kubectl"))
            base = [
                kubectl_bin,
                f"--kubeconfig={cluster.kubeconfig}",
                "get",
                "configmaps,secrets",
                "-A",
                "-o",
                "json",
                "-l",
                "!nonexistent",
            ]
            kubectl_seconds = min(timed(base) for _ in range(2))

            spec: dict[str, Any] = {
                "storageLocation": "bench",
                "selection": {
                    "namespaceSelector": {"matchLabels": {LABEL: tag}},
                    "includedResources": ["configmaps", "secrets"],
                },
            }
            backup = create_and_wait(cluster, OPS, "Backup", "bench", spec, timeout=900)
            assert backup["status"]["phase"] == "Succeeded", backup["status"]
            manifest_key = f"backups/{OPS}/bench/backup.json"
            manifest = json.loads(
                cluster.s3_client().get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
            )
            export_seconds = manifest["timings"]["exportSeconds"]
            total_seconds = manifest["timings"]["totalSeconds"]
            objects = backup["status"]["resources"]["total"]

            mapping = {ns: ns.replace("bench-", "copy-") for ns in names}
            restore = create_and_wait(
                cluster,
                OPS,
                "RestoreRequest",
                "bench",
                {"backupRef": {"name": "bench"}, "namespaceMapping": mapping},
                timeout=900,
            )
            assert restore["status"]["phase"] == "Succeeded", restore["status"]
            restore_seconds = seconds_in((condition(restore, "Succeeded") or {})["message"])
            counts = restore["status"]["counts"]
            rss_peak = rss_kib(pid, "VmHWM")
        finally:
            operator.stop()
    growth = (rss_peak - rss_before) / 1024
    print()
    print(f"objects exported                      {objects}")
    print(f"kubectl get -A -o json (baseline)      {kubectl_seconds:7.2f} s")
    print(
        f"safehold export (lists + files)        {export_seconds:7.2f} s   "
        f"ratio {export_seconds / kubectl_seconds:.2f}x  (goal <= 1.5x)"
    )
    print(
        f"safehold backup incl. restic upload    {total_seconds:7.2f} s   "
        f"ratio {total_seconds / kubectl_seconds:.2f}x"
    )
    print(
        f"restore into 200 mapped namespaces     {restore_seconds:7.2f} s   "
        f"({counts['created']} created, {counts['skipped']} skipped; goal < 60 s)"
    )
    print(
        f"operator RSS before / peak             {rss_before / 1024:7.1f} / "
        f"{rss_peak / 1024:.1f} MiB   growth {growth:.1f} MiB (goal < 64 MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
