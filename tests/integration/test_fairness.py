"""Runs are queued fairly across namespaces: a burst of Backups in one namespace does not make
a Backup of another namespace wait for the whole burst (the real operator and its queue)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import yaml

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import API, apply, condition, location_docs, wait_complete, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE as OPS

BURST = 32


def _backup(name: str, namespace: str, location: str = "main") -> dict[str, object]:
    spec = {
        "storageLocation": location,
        "selection": {"namespaces": [namespace], "includedResources": ["configmaps"]},
    }
    return {"apiVersion": API, "kind": "Backup", "metadata": {"name": name}, "spec": spec}


def test_a_burst_in_one_namespace_does_not_delay_another(
    local_cluster: LocalCluster, ops_bucket: str, app: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    bucket = f"fair-{tag}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, app, *location_docs(local_cluster, "own", bucket))
    assert (condition(wait_probed(local_cluster, app, "own"), "Ready") or {})["status"] == "True"
    burst = [_backup(f"burst-{tag}-{i:02d}", app) for i in range(BURST)]
    kubectl(local_cluster, "apply", "-n", OPS, "-f", "-", stdin=yaml.safe_dump_all(burst))
    # The burst is well under way when the other namespace's Backup arrives.
    wait_for(
        lambda: sum(_done(local_cluster, b["metadata"]["name"]) for b in burst) >= 4,  # type: ignore[index]
        120,
        "the first runs of the burst",
    )
    other = f"quiet-{tag}"
    quiet = _backup(other, app, "own")
    kubectl(local_cluster, "apply", "-n", app, "-f", "-", stdin=yaml.safe_dump(quiet))
    done = wait_complete(local_cluster, app, "backup", other, timeout=300)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    finished = [
        wait_complete(local_cluster, OPS, "backup", b["metadata"]["name"], timeout=600)  # type: ignore[index]
        for b in burst
    ]
    assert {f["status"]["phase"] for f in finished} == {"Succeeded"}
    # When a worker came free, the other namespace's run went first: FIFO would have started
    # every run of the burst before it. (Start times, not completion: the quiet run inits a
    # repository of its own and may well take longer than a burst run.)
    quiet_start = _started(done)
    started_after = [f["metadata"]["name"] for f in finished if _started(f) > quiet_start]
    assert len(started_after) >= BURST // 4, (quiet_start, started_after)


def _started(backup: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(backup["status"]["startTime"].replace("Z", "+00:00"))


def _done(cluster: LocalCluster, name: str) -> bool:
    result = kubectl(cluster, "get", "-n", OPS, "backup", name, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    return (condition(json.loads(result.stdout), "Complete") or {}).get("status") == "True"
