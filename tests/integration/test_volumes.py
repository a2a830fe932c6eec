"""PVC data through mover Jobs: every mode round-trips a hard tree byte for byte and with its
metadata (sparse files sparse, the root directory's mode and time, several owners with the
root mover); a restricted mover names what it cannot read; failures name the PVC and lose
nothing. Node agent (which runs movers as their pod's user) + the test-only CSI stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.csi_standin import NEVER_READY, CsiStandIn
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import apply, create_and_wait, get
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import delete_namespace_and_wait, restic_check, restic_cli
from localcluster.trees import (
    SPARSE_IMAGE,
    allocated,
    change_fraction,
    describe,
    describe_root,
    make_tree,
)
from safehold.api.labels import LABEL_BACKUP, LABEL_POD_SECURITY_ENFORCE, LABEL_VOLUME_MOVER
from safehold.planning.builders import DEFAULT_MOVER_UID

pytestmark = pytest.mark.usefixtures("operator")
MOVER = (DEFAULT_MOVER_UID, DEFAULT_MOVER_UID)  # what a mover reads as with no pod on the PVC
ROOT_MOVER = {LABEL_POD_SECURITY_ENFORCE: "baseline", LABEL_VOLUME_MOVER: "root"}


def pvc(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


@pytest.fixture
def vol_ns(local_cluster: LocalCluster, ops_bucket: str, csi: CsiStandIn) -> Iterator[str]:
    ns = f"vol-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    yield ns
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def root_ns(local_cluster: LocalCluster, ops_bucket: str, csi: CsiStandIn) -> Iterator[str]:
    """A namespace a cluster admin opened to the root mover (Pod Security baseline)."""
    ns = f"root-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns, labels=ROOT_MOVER)
    yield ns
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


def run_jobs(cluster: LocalCluster, ns: str, run: str) -> list[dict[str, Any]]:
    """The mover Jobs of a Backup or RestoreRequest named `run` (kept 10 minutes)."""
    out = kubectl(cluster, "get", "jobs", "-n", ns, "-l", f"{LABEL_BACKUP}={run}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def security_of(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    return pod["securityContext"], pod["containers"][0]["securityContext"]


def backup_volumes(
    cluster: LocalCluster, ns: str, name: str, mode: str, **volumes: Any
) -> dict[str, Any]:
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [ns]},
        "volumes": {"rules": [{"mode": mode}], **volumes},
    }
    return create_and_wait(cluster, OPS, "Backup", name, spec, timeout=240)


def lose_everything(cluster: LocalCluster, ns: str, claims: list[str]) -> None:
    """The namespace is deleted and the storage behind its PVCs is gone too."""
    delete_namespace_and_wait(cluster, ns)
    for claim in claims:
        shutil.rmtree(cluster.pvc_path(ns, claim))


def wait_temporaries_gone(cluster: LocalCluster, ns: str) -> None:
    """snapshot+move: the temporary PVC and VolumeSnapshot are deleted (pvc-protection lags)."""

    def only_data_left() -> bool:
        out = kubectl(cluster, "get", "pvc,volumesnapshots", "-n", ns, "-o", "name")
        return out.stdout.split() == ["persistentvolumeclaim/data"]

    wait_for(only_data_left, 90, "the temporary PVC and VolumeSnapshot to be gone")


DISK_MIB = 256


def assert_sparse(root: Path, before: dict[str, int]) -> None:
    """Sparse files take about what they took, not their apparent size: restic leaves the
    all-zero chunks (512 KiB to 8 MiB each) of a file unwritten."""
    after = {name: allocated(root / name) for name in before}
    assert max(before.values()) <= 64 * 1024, before  # the originals are sparse
    assert after["sparse.img"] <= 1 << 20, after  # of 64 MiB
    assert after[SPARSE_IMAGE] <= 4 << 20, after  # three 4 KiB blocks of 256 MiB


@pytest.mark.parametrize("mode", ["filesystem", "snapshot+move"])
def test_root_mover_round_trip_is_byte_identical(
    local_cluster: LocalCluster, root_ns: str, mode: str
) -> None:
    """Files of several users (0600, 0000, a 0700 directory, setgid), in a PVC no pod mounts,
    come back with their owners, modes and times, sparse files sparse, the root directory's
    mode and time too: the namespace uses the root mover."""
    apply(local_cluster, root_ns, pvc("data"))
    data = local_cluster.pvc_path(root_ns, "data")
    make_tree(data, owner=(1000, 1000), other_owners=True, disk_mib=DISK_MIB)
    original, root = describe(data), describe_root(data)
    sparse = {name: allocated(data / name) for name in ("sparse.img", SPARSE_IMAGE)}
    name = f"v-{root_ns}-{mode.replace('+', '')}"
    done = backup_volumes(local_cluster, root_ns, name, mode)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    [vol] = status["volumes"]
    assert (vol["pvc"], vol["result"], vol["mode"]) == ("data", "Succeeded", mode)
    assert (vol["runAsUser"], vol["runAsGroup"]) == (0, 0)
    assert vol["snapshotId"]
    assert vol["files"] >= 300
    # Sizes count sparse files at their apparent length.
    assert vol["bytes"] >= (DISK_MIB + 64) << 20
    assert status["sizeBytes"] >= vol["bytes"]
    if mode == "snapshot+move":
        wait_temporaries_gone(local_cluster, root_ns)
    else:
        [job] = run_jobs(local_cluster, root_ns, name)
        pod, container = security_of(job)
        assert (pod["runAsUser"], pod["runAsGroup"], pod["runAsNonRoot"]) == (0, 0, False)
        assert container["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
        assert container["allowPrivilegeEscalation"] is False
        assert container["readOnlyRootFilesystem"] is True

    lose_everything(local_cluster, root_ns, ["data"])
    # Only the live Namespace's labels count: the admin opens the new one again first.
    local_cluster.create_namespace(root_ns, labels=ROOT_MOVER)
    restored = create_and_wait(
        local_cluster, OPS, "RestoreRequest", name, {"backupRef": {"name": name}}, timeout=240
    )
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    assert restored["status"]["volumes"][0]["result"] == "Succeeded"
    [job] = run_jobs(local_cluster, root_ns, name)
    _, container = security_of(job)
    assert container["capabilities"]["add"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
    assert describe(data) == original
    assert describe_root(data) == root
    assert_sparse(data, sparse)


def test_restricted_mover_round_trip_keeps_the_owner(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    """The usual case: the data belongs to the user the mover reads and writes as."""
    apply(local_cluster, vol_ns, pvc("data"))
    data = local_cluster.pvc_path(vol_ns, "data")
    make_tree(data, small_files=50, large_mib=1, owner=MOVER, disk_mib=DISK_MIB)
    original = describe(data)
    sparse = {name: allocated(data / name) for name in ("sparse.img", SPARSE_IMAGE)}
    name = f"r-{vol_ns}"
    done = backup_volumes(local_cluster, vol_ns, name, "filesystem")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    [job] = run_jobs(local_cluster, vol_ns, name)
    pod, container = security_of(job)
    assert (pod["runAsUser"], pod["runAsNonRoot"]) == (DEFAULT_MOVER_UID, True)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["readOnlyRootFilesystem"] is True
    assert job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1]["readOnly"]
    assert all(
        "value" not in e
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] in ("RESTIC_PASSWORD", "AWS_SECRET_ACCESS_KEY")
    )
    lose_everything(local_cluster, vol_ns, ["data"])
    restored = create_and_wait(
        local_cluster, OPS, "RestoreRequest", name, {"backupRef": {"name": name}}, timeout=240
    )
    assert restored["status"]["volumes"][0]["result"] == "Succeeded", restored["status"]
    assert describe(data) == original
    assert_sparse(data, sparse)


def test_restricted_mover_names_the_files_it_cannot_read(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    """Files of other users in a PVC no pod mounts: the mover (UID 65532) cannot read four of
    them; the PVC fails with their count and paths, never a silent partial backup."""
    apply(local_cluster, vol_ns, pvc("data"))
    make_tree(
        local_cluster.pvc_path(vol_ns, "data"),
        small_files=5,
        large_mib=1,
        owner=MOVER,
        other_owners=True,
    )
    name = f"unr-{vol_ns}"
    done = backup_volumes(local_cluster, vol_ns, name, "filesystem")
    status = done["status"]
    assert status["phase"] == "PartiallyFailed", status
    [vol] = status["volumes"]
    assert vol["result"] == "Failed"
    message = vol["message"]
    assert message.startswith(
        "UnreadableFiles: 4 file(s) or directories could not be read as UID 65532 GID 65532: "
    ), message
    for path in ("owned-by-1000.txt", "home-2000", "root-only.key", "setgid-tool"):
        assert f"{path} (permission denied)" in message, message
    assert vol["snapshotId"], vol  # the incomplete snapshot, so that deletion removes it
    assert any(f"PVC {vol_ns}/data: UnreadableFiles" in e for e in status["errors"])
    # A restore takes nothing of it.
    restored = create_and_wait(
        local_cluster, OPS, "RestoreRequest", name, {"backupRef": {"name": name}}
    )
    assert restored["status"].get("volumes", []) == [], restored["status"]


def test_root_mover_needs_a_namespace_whose_pod_security_admits_it(
    local_cluster: LocalCluster, ops_bucket: str, csi: CsiStandIn
) -> None:
    ns = f"adm-{uuid.uuid4().hex[:6]}"
    labels = {LABEL_POD_SECURITY_ENFORCE: "restricted", LABEL_VOLUME_MOVER: "root"}
    local_cluster.create_namespace(ns, labels=labels)
    apply(local_cluster, ns, pvc("data"))
    (local_cluster.pvc_path(ns, "data") / "f").write_text("x")
    name = f"adm-{ns}"
    done = backup_volumes(local_cluster, ns, name, "filesystem")
    [vol] = done["status"]["volumes"]
    assert vol["result"] == "Failed"
    assert vol["message"].startswith("RootMoverNotAdmitted: namespace " + ns), vol
    assert "enforce=restricted" in vol["message"]
    assert run_jobs(local_cluster, ns, name) == []  # no mover was started


def test_snapshot_mode_keeps_a_volume_snapshot_and_restores_from_it(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    apply(local_cluster, vol_ns, pvc("data"))
    make_tree(local_cluster.pvc_path(vol_ns, "data"), small_files=20, large_mib=1)
    original = describe(local_cluster.pvc_path(vol_ns, "data"))
    name = f"snap-{vol_ns}"
    done = backup_volumes(local_cluster, vol_ns, name, "snapshot")
    [vol] = done["status"]["volumes"]
    assert vol["result"] == "Succeeded", vol
    snapshot = get(local_cluster, vol_ns, "volumesnapshot", vol["volumeSnapshot"])
    assert snapshot["status"]["readyToUse"] is True
    kubectl(local_cluster, "delete", "pvc", "-n", vol_ns, "data")
    shutil.rmtree(local_cluster.pvc_path(vol_ns, "data"))
    restored = create_and_wait(
        local_cluster, OPS, "RestoreRequest", name, {"backupRef": {"name": name}}
    )
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    claim = get(local_cluster, vol_ns, "pvc", "data")
    assert claim["spec"]["dataSource"]["name"] == vol["volumeSnapshot"]
    wait_for(
        lambda: get(local_cluster, vol_ns, "pvc", "data")["status"].get("phase") == "Bound",
        30,
        "the restored PVC to be provisioned",
    )
    assert describe(local_cluster.pvc_path(vol_ns, "data")) == original


def test_incremental_backup_uploads_only_the_change(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    apply(local_cluster, vol_ns, pvc("data"))
    root = local_cluster.pvc_path(vol_ns, "data")
    make_tree(root, small_files=50, large_mib=32, owner=MOVER)
    first = backup_volumes(local_cluster, vol_ns, f"inc1-{vol_ns}", "filesystem")
    changed = change_fraction(root, 0.01)
    second = backup_volumes(local_cluster, vol_ns, f"inc2-{vol_ns}", "filesystem")
    added_first = first["status"]["volumes"][0]["bytesAdded"]
    added_second = second["status"]["volumes"][0]["bytesAdded"]
    assert added_first > 8 * 1024 * 1024  # compressed by the repository
    assert 0 < added_second < added_first * 0.3, (changed, added_first, added_second)


def test_existing_data_is_not_overwritten_unless_asked(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    apply(local_cluster, vol_ns, pvc("data"))
    root = local_cluster.pvc_path(vol_ns, "data")
    make_tree(root, small_files=5, large_mib=1, owner=MOVER)
    name = f"ow-{vol_ns}"
    backup_volumes(local_cluster, vol_ns, name, "filesystem")
    (root / "new-after-backup.txt").write_text("keep me\n")
    kept = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"{name}-1", {"backupRef": {"name": name}}
    )
    [vol] = kept["status"]["volumes"]
    assert vol["result"] == "Skipped"
    assert vol["message"].startswith("TargetNotEmpty: the PVC already holds data"), vol
    # A skip is not a failure: the Job completed, so no Job-failure alert fires.
    [job] = run_jobs(local_cluster, vol_ns, f"{name}-1")
    conditions = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
    assert conditions.get("Complete") == "True", job["status"]
    assert "Failed" not in conditions
    assert job["status"].get("succeeded") == 1
    (root / "large.bin").write_bytes(b"damaged")
    over = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"{name}-2",
        {"backupRef": {"name": name}, "volumes": {"overwriteExisting": True}},
    )
    assert over["status"]["volumes"][0]["result"] == "Succeeded", over["status"]
    assert (root / "large.bin").stat().st_size == 1024 * 1024
    assert (root / "new-after-backup.txt").read_text() == "keep me\n"  # never deleted


def test_snapshot_that_never_becomes_ready_times_out(
    local_cluster: LocalCluster, vol_ns: str
) -> None:
    apply(local_cluster, vol_ns, pvc("data"))
    (local_cluster.pvc_path(vol_ns, "data") / "f").write_text("x")
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [vol_ns]},
        "volumes": {
            "rules": [{"mode": "snapshot", "volumeSnapshotClassName": NEVER_READY}],
            "snapshotTimeout": "3s",
        },
    }
    done = create_and_wait(local_cluster, OPS, "Backup", f"nr-{vol_ns}", spec)
    assert done["status"]["phase"] == "PartiallyFailed", done["status"]
    [vol] = done["status"]["volumes"]
    assert vol["result"] == "Failed"
    assert vol["message"].startswith("SnapshotTimeout")
    assert any(f"PVC {vol_ns}/data" in e for e in done["status"]["errors"])


def _restic_locks(cluster: LocalCluster, bucket: str) -> list[str]:
    return restic_cli(cluster, bucket, OPS, "--no-lock", "list", "locks").split()


def test_killed_mover_fails_its_pvc_only_and_the_next_backup_succeeds(
    local_cluster: LocalCluster, ops_bucket: str, vol_ns: str
) -> None:
    apply(local_cluster, vol_ns, pvc("big"), pvc("small"))
    (local_cluster.pvc_path(vol_ns, "small") / "f.txt").write_text("small\n")
    big = local_cluster.pvc_path(vol_ns, "big")
    for i in range(6):
        (big / f"random-{i}.bin").write_bytes(os.urandom(48 * 1024 * 1024))

    def kill_big_mover() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-f", f"restic.*backup.*{big}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if found:
                time.sleep(0.5)  # let it take its lock and start uploading
                subprocess.run(["kill", "-9", *found], check=False)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_big_mover)
    killer.start()
    done = backup_volumes(local_cluster, vol_ns, f"kill-{vol_ns}", "filesystem", parallelism=2)
    killer.join()
    status = done["status"]
    assert status["phase"] == "PartiallyFailed", status
    results = {v["pvc"]: v for v in status["volumes"]}
    assert results["small"]["result"] == "Succeeded"
    assert results["big"]["result"] == "Failed"
    assert any(f"PVC {vol_ns}/big" in e for e in status["errors"])

    again = backup_volumes(local_cluster, vol_ns, f"again-{vol_ns}", "filesystem")
    assert again["status"]["phase"] == "Succeeded", again["status"]
    assert _restic_locks(local_cluster, ops_bucket) == []
    restic_check(local_cluster, ops_bucket, OPS)


def test_pvc_that_does_not_exist_fails_by_name(
    local_cluster: LocalCluster, ops_bucket: str, vol_ns: str
) -> None:
    """A PVC deleted between planning and moving (the only way a selected PVC can be missing)
    fails with PVCNotFound and starts no mover."""
    from safehold.api.content import Volumes
    from safehold.engine.gateway import Gateway
    from safehold.engine.movers import MoverLauncher
    from safehold.engine.volumes import back_up_volume
    from safehold.kube.clients import Clients
    from safehold.kube.locations import resolve_location
    from safehold.planning.volumes import VolumeTask

    clients = Clients.from_api_client(local_cluster.api_client())
    location = get(local_cluster, OPS, "backupstoragelocation", "main")
    from safehold.api.location import BackupStorageLocationSpec

    resolved = resolve_location(
        clients.core, OPS, "main", BackupStorageLocationSpec.model_validate(location["spec"])
    )
    gateway = Gateway(clients, b"k" * 32, "http://127.0.0.1:9")  # nothing reaches it
    launcher = MoverLauncher(clients, gateway, resolved, OPS, "ghost")
    task = VolumeTask(
        vol_ns,
        "ghost",
        "filesystem",
        None,
        "1Gi",
        "standard",
        ("ReadWriteOnce",),
        None,
        65532,
        65532,
        None,
    )
    result = back_up_volume(launcher, Volumes(), task)
    assert result.result == "Failed"
    assert result.message == f"PVCNotFound: PVC {vol_ns}/ghost does not exist"
    jobs = kubectl(local_cluster, "get", "jobs", "-n", vol_ns, "-o", "name").stdout
    assert jobs.strip() == ""
