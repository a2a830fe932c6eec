"""Benchmark: 1,000 BackupPolicies across 100 namespaces (suspended schedules).

Runs on the real local control plane (tools/localcluster). Prints, in one run:
- the operator's resident memory when idle (a Ready location, no policies) and in steady state
  with all policies (goal: under 200 MiB total);
- the time from the first policy created until all are Ready (goal: within 60 s).

Usage: python benchmarks/policies.py [--namespaces 100] [--per-namespace 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import apply, location_docs, wait_probed
from localcluster.operator import OperatorProcess, install_crds


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"VmRSS not found for {pid}")


def steady_rss(pid: int, seconds: float = 10.0) -> float:
    """The largest RSS over a few seconds of steady state."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mib(pid))
        time.sleep(0.5)
    return max(samples)


def ready_count(cluster: LocalCluster, plural: str = "backuppolicies") -> int:
    """How many objects of a Safehold kind are Ready (read through the API, not kubectl, so
    the polling itself costs little CPU)."""
    items = cluster.kube.get(f"/apis/safehold.io/v1alpha1/{plural}")["items"]
    count = 0
    for item in items:
        conds = (item.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            count += 1
    return count


def policy_docs(ns: str, count: int) -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"]
    docs += location_yaml(ns)
    for i in range(count):
        docs.append(
            f"apiVersion: safehold.io/v1alpha1\nkind: BackupPolicy\nmetadata:\n"
            f"  name: p{i:02d}\n  namespace: {ns}\nspec:\n  storageLocation: main\n"
            f"  schedule: '{i} 3 * * *'\n  timeZone: Europe/Berlin\n  suspend: true\n"
            "  retention: {keepDaily: 7, keepWeekly: 4}\n  rpo: 26h\n"
        )
    return "---\n".join(docs)


LOCATION_YAML: list[str] = []


def location_yaml(ns: str) -> list[str]:
    return [doc.replace("__NS__", ns) for doc in LOCATION_YAML]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--per-namespace", type=int, default=10)
    args = parser.parse_args()
    total = args.namespaces * args.per_namespace
    with LocalCluster(node_agent=False) as cluster:
        install_crds(cluster)
        operator = OperatorProcess(cluster).start()
        try:
            pid = operator.process.pid
            assert pid is not None
            bucket = "bench"
            cluster.create_bucket(bucket)
            import yaml

            for doc in location_docs(cluster, "main", bucket):
                doc["metadata"]["namespace"] = "__NS__"
                LOCATION_YAML.append(yaml.safe_dump(doc))
            # The idle baseline: the operator with one Ready location, no policies.
            apply(cluster, "default", *location_docs(cluster, "main", bucket))
            wait_probed(cluster, "default", "main")
            time.sleep(3)
            idle = steady_rss(pid)

            namespaces = [f"pol-{i:03d}" for i in range(args.namespaces)]
            started = time.monotonic()
            for start in range(0, len(namespaces), 10):
                stream = "---\n".join(
                    policy_docs(ns, args.per_namespace) for ns in namespaces[start : start + 10]
                )
                kubectl(cluster, "apply", "-f", "-", stdin=stream, timeout=600)
            created = time.monotonic() - started
            # Policies turn Ready once their namespace's location has been probed and the
            # scheduler has seen them.
            ready = 0
            locations_ready: float | None = None
            while time.monotonic() - started < 600:
                if locations_ready is None and (
                    ready_count(cluster, "backupstoragelocations") == args.namespaces + 1
                ):
                    locations_ready = time.monotonic() - started
                ready = ready_count(cluster)
                if ready == total:
                    break
                time.sleep(1)
            all_ready = time.monotonic() - started
            time.sleep(5)
            steady = steady_rss(pid)
        finally:
            operator.stop()
    print()
    print(f"policies                                {total} in {args.namespaces} namespaces")
    print(f"created (kubectl apply)                 {created:7.1f} s")
    if locations_ready is not None:
        print(f"all locations Ready after first create  {locations_ready:7.1f} s")
    print(
        f"all Ready after first create            {all_ready:7.1f} s   "
        f"({ready}/{total} Ready; goal < 60 s)"
    )
    print(f"operator RSS idle (1 location)          {idle:7.1f} MiB")
    print(
        f"operator RSS steady with all policies   {steady:7.1f} MiB   "
        f"growth {steady - idle:.1f} MiB (goal < 200 MiB total)"
    )
    return 0 if ready == total else 1


if __name__ == "__main__":
    sys.exit(main())
