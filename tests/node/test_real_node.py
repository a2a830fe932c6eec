"""A real node (containerd + runc + bridge CNI + kubelet + kube-scheduler) runs our image.

Runs with `make test` (and alone with `make node-test`) wherever it can: needs root,
`tools/bootstrap node` and the image archive (`make image-save`); skips, saying why, otherwise.
`SAFEHOLD_REAL_NODE=0` skips it; `SAFEHOLD_REAL_NODE=1` turns those skips into failures.
About a minute warm: the node is Ready ~7 s after the control plane, the first pod of our image
waits ~15 s for containerd to unpack it, the mover Job then starts in about a second.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from e2e.roundtrip import restricted_namespace
from localcluster import binaries
from localcluster.kube import KubeError
from localcluster.node import RealNode
from localcluster.trees import describe, describe_root, make_tree
from node.tier import node_skip_reason, skip_unless_runnable

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/safehold:dev"
pytestmark = [pytest.mark.node, skip_unless_runnable(node_skip_reason())]

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def node(real_node: RealNode) -> RealNode:
    return real_node


def _namespace(node: RealNode, name: str) -> None:
    node.cluster.kube.post("/api/v1/namespaces", restricted_namespace(name))
    node.cluster.wait_for_service_account(name, "default")


def _pod(name: str, script: str, security: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": security,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def test_node_is_ready(node: RealNode) -> None:
    assert node.node_ready()
    assert IMAGE in node.images()


def test_pod_of_our_image_runs_under_the_restricted_profile(node: RealNode) -> None:
    kube = node.cluster.kube
    _namespace(node, "restricted")
    script = (
        "set -e; id -u; restic version; safehold --version; pg_dump --version;"
        " touch /probe 2>/dev/null && echo rw-root || echo ro-root;"
        " python3 -c 'from kubernetes import client, config;"
        " config.load_incluster_config();"
        ' print("api", client.VersionApi().get_code().git_version)\''
    )
    kube.post("/api/v1/namespaces/restricted/pods", _pod("smoke", script, RESTRICTED_CONTAINER))
    deadline = time.monotonic() + 120
    phase = ""
    while time.monotonic() < deadline:
        pod = kube.get("/api/v1/namespaces/restricted/pods/smoke")
        phase = pod.get("status", {}).get("phase", "")
        if phase in {"Succeeded", "Failed"}:
            break
        time.sleep(0.5)
    logs = subprocess.run(
        [str(REPO / ".tools" / "bin" / "kubectl"), "--kubeconfig", str(node.cluster.kubeconfig),
         "-n", "restricted", "logs", "smoke"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert phase == "Succeeded", f"phase {phase}; logs: {logs.stdout}{logs.stderr}"
    lines = logs.stdout.splitlines()
    assert lines[0] == "65532"
    assert "ro-root" in lines
    assert any(line.startswith("restic 0.") for line in lines)
    assert any(line.startswith("api v1.") for line in lines), logs.stdout


def test_restricted_profile_rejects_a_root_pod(node: RealNode) -> None:
    _namespace(node, "restricted-reject")
    with pytest.raises(KubeError) as err:
        node.cluster.kube.post(
            "/api/v1/namespaces/restricted-reject/pods",
            _pod("root", "id", {"runAsUser": 0}),
        )
    assert err.value.status == 403
    assert "restricted" in err.value.message


def test_mover_job_backs_up_a_pvc_to_seaweedfs(
    node: RealNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's own mover Job, restricted, on the real node: a hostPath-backed PVC is
    read and stored in a restic repository on the host's SeaweedFS (reached via the bridge)."""
    from safehold.kube.jobs import run_mover
    from safehold.kube.rest import Rest
    from safehold.planning.builders import MoverPod, MoverSpec, VolumeMount
    from safehold.storage import restic
    from safehold.storage.gateway import GatewayServer, RepositoryGateway
    from safehold.storage.grants import Grant, sign

    monkeypatch.setenv("SAFEHOLD_MOVER_IMAGE", IMAGE)
    monkeypatch.setenv("SAFEHOLD_RESTIC", str(binaries.find("restic")))
    cluster, kube, ns = node.cluster, node.cluster.kube, "mover"
    _namespace(node, ns)
    data = node.root / "volumes" / "data"
    (data / "sub").mkdir(parents=True)
    (data / "hello.txt").write_text("hello from a real pod\n")
    (data / "sub" / "blob.bin").write_bytes(os.urandom(64 * 1024))
    with (data / "sub" / "large.bin").open("wb") as out:  # long enough to report progress
        for _ in range(48):
            out.write(os.urandom(8 << 20))
    for path in (
        data,
        data / "sub",
        data / "hello.txt",
        data / "sub" / "blob.bin",
        data / "sub" / "large.bin",
    ):
        path.chmod(0o755 if path.is_dir() else 0o644)
    kube.post(
        "/api/v1/persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "realnode-data"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-static",
                "hostPath": {"path": str(data), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": "data"},
            },
        },
    )
    kube.post(
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-static",
                "volumeName": "realnode-data",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )

    cluster.create_bucket("realnode")
    # The pod reaches its repository as in production: through the repository gateway, with
    # an append grant for that one repository (the gateway runs here, on the host).
    location = _location(cluster, "realnode")
    key = "repositories/mover"
    host_repo = location.repository_at(key)
    restic.init(host_repo)
    gateway = GatewayServer(
        RepositoryGateway(GATEWAY_KEY, lambda ns, name: location), "127.0.0.1", 0
    )
    gateway.start()
    in_pod = f"http://{node.expose_loopback_port(gateway.port)}"
    expires = datetime.now(UTC) + timedelta(minutes=10)
    user, password = sign(GATEWAY_KEY, Grant.issue("ops", "realnode", key, "append", expires))
    secret = {
        "RESTIC_REPOSITORY": f"rest:{in_pod}/",
        "RESTIC_REST_USERNAME": user,
        "RESTIC_REST_PASSWORD": password,
        "RESTIC_PASSWORD": location.repository_password_for(key),
    }

    reported: list[dict[str, Any]] = []
    outcome = run_mover(
        Rest(cluster.api_client()),
        MoverSpec(
            name="backup-data",
            namespace=ns,
            verb="volume-backup",
            env={
                "SAFEHOLD_VOLUME_PATH": "/data",
                "SAFEHOLD_BACKUP": f"{ns}/b1",
                "SAFEHOLD_PVC": f"{ns}/data",
            },
            secret_name="backup-data",
            secret_keys=sorted(secret),
            pod=MoverPod(
                volumes=[VolumeMount("data", "data", "/data", True)], deadline_seconds=120
            ),
        ),
        secret,
        poll=0.5,
        on_progress=reported.append,
    )
    assert outcome.ok, f"{outcome.reason}: {outcome.message}"
    assert outcome.result["files"] == 3
    # Progress was read from the running pod's log while restic worked.
    assert reported, "no progress read from the mover's log"
    assert reported[-1]["totalBytes"] >= 384 << 20
    # restic's first status line may come before any byte is read (it scans first): the
    # counts only ever grow and the last one has read something.
    done = [int(r["bytesDone"]) for r in reported]
    assert done == sorted(done), done
    assert done[-1] > 0, done
    snaps = restic.snapshots(host_repo, [f"safehold.io/backup={ns}/b1"])
    assert [s["short_id"] for s in snaps] == [outcome.result["snapshotId"][:8]]
    gateway.stop()


GATEWAY_KEY = b"real-node-gateway-key-0123456789"


def _location(cluster: Any, bucket: str) -> Any:
    """A ResolvedLocation on the host's SeaweedFS."""
    from safehold.api.location import BackupStorageLocationSpec
    from safehold.storage.location import ResolvedLocation
    from safehold.storage.s3 import S3Settings

    spec = BackupStorageLocationSpec.model_validate(
        {
            "endpoint": cluster.s3_endpoint_url,
            "bucket": bucket,
            "forcePathStyle": True,
            "credentialsSecret": {"name": "s3"},
            "repositoryPasswordSecret": {"name": "pw"},
        }
    )
    s3 = S3Settings(
        bucket=bucket,
        prefix="",
        region=cluster.s3_region,
        endpoint=cluster.s3_endpoint_url,
        force_path_style=True,
        access_key_id=cluster.s3_access_key,
        secret_access_key=cluster.s3_secret_key,
    )
    return ResolvedLocation("ops", bucket, spec, s3, "real-node")


def test_backup_hooks_exec_in_a_running_pod(node: RealNode) -> None:
    """Hook execution goes through the real pods/exec API to the kubelet."""
    from kubernetes import client

    from safehold.kube.execs import run_exec
    from safehold.planning.hooks import HookExec

    kube = node.cluster.kube
    _namespace(node, "hooks")
    kube.post("/api/v1/namespaces/hooks/pods", _pod("app", "sleep 600", RESTRICTED_CONTAINER))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            kube.get("/api/v1/namespaces/hooks/pods/app").get("status", {}).get("phase")
            == "Running"
        ):
            break
        time.sleep(0.5)
    core = client.CoreV1Api(node.cluster.api_client())

    def hook(command: list[str], timeout: int = 20) -> HookExec:
        return HookExec("flush", "hooks", "app", "main", tuple(command), timeout, "Fail")

    ok = run_exec(core, hook(["sh", "-c", "echo flushed > /tmp/marker && echo quiesced"]))
    assert ok.ok, ok.message
    assert "quiesced" in ok.message
    check = run_exec(core, hook(["cat", "/tmp/marker"]))
    assert check.ok
    assert "flushed" in check.message
    failed = run_exec(core, hook(["sh", "-c", "echo cannot flush >&2; exit 3"]))
    assert not failed.ok
    assert "cannot flush" in failed.message
    slow = run_exec(core, hook(["sleep", "30"], timeout=2))
    assert not slow.ok
    assert "timed out after 2s" in slow.message


# ------------------------------------------------------------------ volumes of several owners
def _static_volume(node: RealNode, ns: str, pv: str, path: Path) -> None:
    """A hostPath PV on `path` and the PVC `data` of `ns` bound to it (no pod mounts it)."""
    kube = node.cluster.kube
    kube.post(
        "/api/v1/persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-static",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": "data"},
            },
        },
    )
    kube.post(
        f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-static",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        claim = kube.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data")
        if claim.get("status", {}).get("phase") == "Bound":
            return
        time.sleep(0.5)
    raise AssertionError(f"PVC {ns}/data not Bound")


@pytest.fixture(scope="module")
def movers(node: RealNode) -> Iterator[Callable[[str], Any]]:
    """MoverLaunchers of runs in `ops`, reaching the host's SeaweedFS through a repository
    gateway on the host, as the operator's would."""
    from safehold.engine.gateway import Gateway
    from safehold.engine.movers import MoverLauncher
    from safehold.kube.clients import Clients
    from safehold.storage.gateway import RepositoryGateway

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAFEHOLD_MOVER_IMAGE", IMAGE)
        patch.setenv("SAFEHOLD_RESTIC", str(binaries.find("restic")))
        node.cluster.create_bucket("owners")
        location = _location(node.cluster, "owners")
        clients = Clients.from_api_client(node.cluster.api_client())
        gateway = Gateway(clients, GATEWAY_KEY)
        gateway.logic = RepositoryGateway(GATEWAY_KEY, lambda ns, name: location)
        gateway.start("127.0.0.1", 0)
        assert gateway.server is not None
        gateway.url = f"http://{node.expose_loopback_port(gateway.server.port)}"
        yield lambda run: MoverLauncher(clients, gateway, location, "ops", run)
        gateway.stop()


def _owners_namespace(node: RealNode, name: str, labels: dict[str, str]) -> None:
    namespace = restricted_namespace(name)
    namespace["metadata"]["labels"].update(labels)
    node.cluster.kube.post("/api/v1/namespaces", namespace)
    node.cluster.wait_for_service_account(name, "default")


def test_restricted_mover_reports_files_it_cannot_read(
    node: RealNode, movers: Callable[[str], Any]
) -> None:
    """Files of several users, 0600 and 0000, in a PVC no pod mounts: the restricted mover
    (UID 65532, a real runc container) cannot read four of them and says which."""
    from safehold.api.content import Volumes
    from safehold.engine.volumes import back_up_volume, list_tasks

    ns = "owners-restricted"
    _owners_namespace(node, ns, {})
    data = node.root / "volumes" / "owners-restricted"
    make_tree(data, small_files=5, large_mib=1, owner=(65532, 65532), other_owners=True)
    _static_volume(node, ns, "owners-restricted", data)
    launcher = movers("unreadable")
    (task,) = list_tasks(launcher.clients.rest, [ns], Volumes())
    assert (task.run_as_user, task.run_as_group, task.root_mover) == (65532, 65532, False)
    result = back_up_volume(launcher, Volumes(), task)
    assert result.result == "Failed", result
    message = result.message or ""
    assert message.startswith(
        "UnreadableFiles: 4 file(s) or directories could not be read as UID 65532 GID 65532: "
    ), message
    for path in ("home-2000", "owned-by-1000.txt", "root-only.key", "setgid-tool"):
        assert f"{path} (permission denied)" in message, message
    assert result.snapshot_id  # the incomplete snapshot, recorded for deletion only


def test_root_mover_backs_up_and_restores_owners_and_modes(
    node: RealNode, movers: Callable[[str], Any]
) -> None:
    """The same kind of volume in a namespace a cluster admin opened to the root mover
    (Pod Security baseline, which the real API server enforces on its pods): backed up and
    restored into a new volume in a copy of the namespace with owners, modes, times and the
    root directory intact."""
    from safehold.api.content import Volumes
    from safehold.api.labels import LABEL_POD_SECURITY_ENFORCE, LABEL_VOLUME_MOVER
    from safehold.engine.volumes import back_up_volume, list_tasks, restore_volume, task_for_restore

    ns = "owners-root"
    _owners_namespace(
        node, ns, {LABEL_POD_SECURITY_ENFORCE: "baseline", LABEL_VOLUME_MOVER: "root"}
    )
    data = node.root / "volumes" / "owners-root"
    make_tree(data, small_files=20, large_mib=1, owner=(1000, 1000), other_owners=True)
    original, root = describe(data), describe_root(data)
    _static_volume(node, ns, "owners-root", data)
    launcher = movers("root-backup")
    (task,) = list_tasks(launcher.clients.rest, [ns], Volumes())
    backed_up = back_up_volume(launcher, Volumes(), task)
    assert backed_up.result == "Succeeded", backed_up
    assert (backed_up.run_as_user, backed_up.run_as_group) == (0, 0)
    job = node.cluster.kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"][0]
    container = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert container["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}

    # Into a new volume of a copy of the namespace, opened to the root mover as well.
    copy = "owners-root-copy"
    _owners_namespace(
        node, copy, {LABEL_POD_SECURITY_ENFORCE: "baseline", LABEL_VOLUME_MOVER: "root"}
    )
    target = node.root / "volumes" / "owners-root-copy"
    target.mkdir(mode=0o755)  # a new volume's root, as a CSI driver makes it: root's
    _static_volume(node, copy, "owners-root-copy", target)
    restored = restore_volume(
        movers("root-restore"),
        Volumes(),
        backed_up,
        task_for_restore(backed_up, copy),
        False,
        {},
    )
    assert restored.result == "Succeeded", restored
    assert describe(target) == original
    assert describe_root(target) == root
