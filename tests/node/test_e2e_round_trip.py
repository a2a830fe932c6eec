"""The end-to-end round trip (tests/e2e/roundtrip.py) on the real node, in `make test` as root.

The operator is installed with `helm install` from charts/safehold and runs from our image in a
pod; mover Jobs run as restricted pods of the image; PVCs of the StorageClass
`realnode-hostpath` are provisioned by `localcluster.hostpath_provisioner` (reclaim `Delete`,
like kind's local-path); PostgreSQL 15 and SeaweedFS run in pods of images built by
`make node-images` (tools/images/). The same scenario runs on kind in tests/e2e/test_kind.py.

What this node does not have, and how the scenario goes around it:
- no cluster DNS and no kube-proxy (RealNode DNATs only the `kubernetes` Service), so the
  database target names the PostgreSQL pod IP, and the restore runs in two steps (objects and
  volume, then the database at the new pod's IP);
- for the same reason the location's endpoint is the SeaweedFS pod's IP.

Needs what the node tier needs plus build/image/{postgres,seaweedfs}-oci.tar
(`make node-images`) and helm (`tools/bootstrap helm`); about two minutes warm.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.roundtrip import Platform, run_round_trip
from localcluster.hostpath_provisioner import STORAGE_CLASS, HostPathProvisioner
from localcluster.node import RealNode, start_workload_controllers
from node.tier import PG_ARCHIVE, REPO, SEAWEEDFS_ARCHIVE, node_skip_reason, skip_unless_runnable


def _skip_reason() -> str | None:
    reason = node_skip_reason()
    if reason:
        return reason
    for archive in (PG_ARCHIVE, SEAWEEDFS_ARCHIVE):
        if not archive.is_file():
            return f"{archive} missing: run `make node-images`"
    from helmchart import helm_binary

    if helm_binary() is None:
        return "helm missing: run `tools/bootstrap helm`"
    return None


_REASON = _skip_reason()
PODS = "app.kubernetes.io/name=safehold,app.kubernetes.io/component=operator"
pytestmark = [pytest.mark.node, skip_unless_runnable(_REASON)]


class RealNodePlatform:
    """The real node as a `roundtrip.Platform`."""

    storage_class = STORAGE_CLASS
    service_dns = False

    def __init__(self, node: RealNode) -> None:
        self.node = node
        self.kubeconfig = node.cluster.kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        from localcluster.helpers import kubectl

        return kubectl(self.node.cluster, *args, stdin=stdin, timeout=timeout).stdout

    def helm(self, *args: str) -> str:
        from helmchart import helm

        return helm(*args, "--kubeconfig", str(self.kubeconfig), timeout=400).stdout


@pytest.fixture(scope="module")
def platform(real_node: RealNode) -> Iterator[Platform]:
    if _REASON is not None:
        pytest.fail(f"SAFEHOLD_REAL_NODE=1 but the round trip cannot run: {_REASON}")
    # The harness's controller manager has no Deployment controllers; the chart needs them.
    start_workload_controllers(real_node)
    real_node.import_image(PG_ARCHIVE)
    real_node.import_image(SEAWEEDFS_ARCHIVE)
    with HostPathProvisioner(real_node):
        yield RealNodePlatform(real_node)


def test_backup_delete_restore_round_trip(
    platform: RealNodePlatform, real_node: RealNode, tmp_path: Path
) -> None:
    volumes = real_node.root / "volumes"

    def volume_gone() -> bool:
        # Only the provisioner's directories count; other tests use fixed names.
        return not any(p.name.startswith("pvc-") for p in volumes.iterdir())

    try:
        timings = run_round_trip(
            platform, REPO / "charts" / "safehold", tmp_path, volume_gone=volume_gone
        )
    except Exception:
        _dump_operator_log(platform)
        raise
    print("round trip timings (s):", json.dumps(timings))


def test_a_second_replica_takes_over_a_run_whose_operator_died(
    platform: RealNodePlatform,
) -> None:
    """tests/e2e/failover.py, on the installation the round trip left."""
    from e2e.failover import run_failover

    try:
        print("failover:", json.dumps(run_failover(platform, str(REPO / "charts" / "safehold"))))
    except Exception:
        _dump_operator_log(platform)
        raise


def _dump_operator_log(platform: RealNodePlatform) -> None:
    try:
        print(
            platform.kubectl("-n", "safehold-system", "logs", "--prefix", "--tail=200", "-l", PODS)
        )
    except subprocess.SubprocessError as err:
        print(f"no operator log: {err}")
