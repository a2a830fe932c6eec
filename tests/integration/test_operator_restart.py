"""An operator that dies in the middle of a backup does not leave the Backup Running forever:
after the restart the run is taken up again and finishes."""

from __future__ import annotations

import os
import uuid

from localcluster.cluster import LocalCluster
from localcluster.helpers import wait_for
from localcluster.objects import apply, condition, get, wait_complete
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess


def test_backup_interrupted_by_an_operator_crash_completes_after_restart(
    local_cluster: LocalCluster, operator: OperatorProcess, ops_bucket: str
) -> None:
    ns = f"crash-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    apply(
        local_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    data = local_cluster.pvc_path(ns, "data")
    for i in range(4):
        (data / f"blob-{i}.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    name = f"crash-{ns}"
    apply(
        local_cluster,
        OPS,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": name},
            "spec": {
                "storageLocation": "main",
                "selection": {"namespaces": [ns]},
                "volumes": {"rules": [{"mode": "filesystem"}]},
            },
        },
    )
    wait_for(
        lambda: get(local_cluster, OPS, "backup", name).get("status", {}).get("phase") == "Running",
        60,
        "the backup to be running",
    )
    operator.crash_and_restart()
    done = wait_complete(local_cluster, OPS, "backup", name, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (condition(done, "Complete") or {})["status"] == "True"
    assert done["status"]["volumes"][0]["result"] == "Succeeded"
