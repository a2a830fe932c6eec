"""A real node for a running `LocalCluster`: containerd + runc, bridge CNI, kubelet, kube-scheduler.

Root only; `make test` runs its tests where it can (`make node-test` runs just those):

    with LocalCluster(node_agent=False) as cluster, RealNode(cluster) as node:
        node.import_image(Path("build/image/safehold-oci.tar"))
        ...  # pods of our image run for real

Everything the node creates is its own and is removed on `stop()`:
- a bridge `shb<id>` with the gateway address of a free /24 in 10.200.0.0/16; pods get addresses
  from it (host-local IPAM with its state in the work dir) in network namespaces made by
  containerd; no masquerading, and forwarding out of the bridge is dropped, so pods reach only
  each other and the host ports the node exposes;
- the API server binds 127.0.0.1 only, and pods cannot reach the host's loopback. So an iptables
  chain `SH-<id>` (nat PREROUTING, only for packets arriving on the bridge) DNATs the ClusterIP
  of the `kubernetes` Service (port 443) to 127.0.0.1:<api port>, with `route_localnet` set on
  the bridge only. The serving certificate already names that ClusterIP, so in-cluster clients
  verify TLS as usual. `expose_loopback_port()` does the same for other loopback services
  (S3, databases): the pod dials <gateway>:<port>;
- containerd with its root, state, socket, runc state and CRI config in the work dir, the sandbox
  image built from our own static `pause` binary (tools/bootstrap) as a one-layer OCI archive;
- kubelet (cgroupfs driver, cgroup v1 allowed, swap check off, cgroup root `/safehold-<id>`,
  root dir, pod logs and certificates in the work dir) with a client certificate for
  `system:node:<name>` signed by the cluster CA; its API binds the gateway address (a node IP
  cannot be loopback) and allows the API server's unauthenticated calls (logs, exec), since the
  API server of the harness has no kubelet client certificate;
- kube-scheduler on 127.0.0.1 with a client certificate for `system:kube-scheduler`;
- the few fixed paths (FIXED_PATHS: the kubelet's symlinks in /var/log/containers and its
  device-plugin socket under /var/lib/kubelet, the shims' socket directory /run/containerd/s):
  our symlinks, the socket when this node created it, and those directories once empty.

Our machines give no process CAP_SYS_RESOURCE, not even root: nothing may lower its
`oom_score_adj` (below its floor, 0 here) or raise an rlimit above the hard limit. The CRI asks for
-998 for every sandbox (and -997 for Guaranteed pods), and runc's nsexec then dies before the
container starts: "can't get final child's PID from pipe: EOF", which `runc --debug` explains
as "failed to update /proc/self/oom_score_adj: Permission denied". So containerd's CRI runs with
`restrict_oom_score_adj` (scores are clamped to containerd's own, 0 here) and the kubelet with
`oomScoreAdj: 0`. The CRI sets no rlimits, so containers inherit the host's (podman sets its own
above the hard limit, hence its `--ulimit` flags).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from localcluster import binaries
from localcluster.kube import MERGE_PATCH, KubeError
from localcluster.pki import first_service_ip
from localcluster.process import ManagedProcess, ProcessError, free_ports

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

log = logging.getLogger("localcluster.node")

RUNC = Path("/usr/sbin/runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
PAUSE_IMAGE = "localhost/safehold-pause:1"
NODE_BINARIES = ("kubelet", "kube-scheduler", "pause")
HOST_COMMANDS = ("containerd", "ctr", "ip", "iptables", "openssl")
# Fixed paths whatever the configuration: the kubelet's symlinks to container logs and its
# device plugin registration socket; the directory of containerd 1.6's shim sockets.
KUBELET_LOG_LINKS = Path("/var/log/containers")
FIXED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet/device-plugins/kubelet.sock"),
    KUBELET_LOG_LINKS,
    Path("/run/containerd"),
    Path("/run/containerd/s"),
)


class NodeUnavailableError(RuntimeError):
    """This machine cannot run a real node (not root, or a tool is missing)."""


def unavailable_reason() -> str | None:
    """Why a real node cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, network namespaces, iptables, cgroups)"
    missing = [c for c in HOST_COMMANDS if shutil.which(c) is None]
    if not RUNC.exists():
        missing.append(str(RUNC))
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"{CNI_BIN_DIR}/bridge")
    for name in NODE_BINARIES:
        try:
            binaries.find(name)
        except binaries.MissingBinaryError:
            missing.append(name)
    if missing:
        return f"missing for a real node: {', '.join(missing)}; run `tools/bootstrap node`"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()}"
        )
    return result


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/16 that no route of this host overlaps."""
    routes = _run("ip", "-4", "-o", "route", "show", "table", "all").stdout
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in routes.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest.startswith("local") or dest.startswith("broadcast"):
            dest = line.split()[1]
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(dest, strict=False))
    candidates = list(ipaddress.IPv4Network("10.200.0.0/16").subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    for net in candidates[start:] + candidates[:start]:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0/16 for the node's pod network")


def pause_image_archive(pause_binary: Path, out: Path, name: str = PAUSE_IMAGE) -> Path:
    """Write a one-layer OCI image archive holding `pause_binary` as /pause (the entrypoint)."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        data = pause_binary.read_bytes()
        info = tarfile.TarInfo("pause")
        info.size = len(data)
        info.mode = 0o755
        layer.addfile(info, io.BytesIO(data))
    layer_bytes = layer_buf.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer_bytes),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as archive:
        blobs = {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": index,
            f"blobs/sha256/{layer_digest[7:]}": layer_bytes,
            f"blobs/sha256/{config_digest[7:]}": config,
            f"blobs/sha256/{manifest_digest[7:]}": manifest,
        }
        for path, blob in blobs.items():
            info = tarfile.TarInfo(path)
            info.size = len(blob)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(blob))
    return out


class RealNode:
    """containerd + kubelet + kube-scheduler joined to a running `LocalCluster`."""

    def __init__(self, cluster: LocalCluster, *, name: str | None = None) -> None:
        self.cluster = cluster
        # By default the node is named by its IP: the API server reaches a kubelet at its
        # Hostname address first, and an IP needs no DNS lookup (which would leave the host).
        self._requested_name = name
        self.name = name or ""
        self.id = secrets.token_hex(3)
        self.root = cluster.workdir / "realnode"
        self.bridge = f"shb{self.id}"
        self.chain = f"SH-{self.id}"
        self.cgroup_root = f"safehold-{self.id}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = ""
        self._processes: list[ManagedProcess] = []
        self._containerd: ManagedProcess | None = None
        self._iptables_rules: list[tuple[str, list[str]]] = []
        self._bridge_created = False
        self._started = False
        self._stopped = False
        self._preexisting: set[Path] = set()

    # ------------------------------------------------------------------ paths
    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def logs_dir(self) -> Path:
        return self.cluster.logs_dir

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> RealNode:
        reason = unavailable_reason()
        if reason:
            raise NodeUnavailableError(reason)
        self._started = True
        self._preexisting = {p for p in FIXED_PATHS if p.exists() or p.is_symlink()}
        t0 = time.monotonic()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._network()
            self._start_containerd(timeout)
            self.import_image(
                pause_image_archive(binaries.find("pause"), self.root / "pause-oci.tar")
            )
            self._start_scheduler()
            self._make_cgroups()
            self._start_kubelet()
            self.wait_ready(max(5.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.cluster.keep_workdir = True
            self.stop()
            raise
        log.info("real node %s ready in %.1fs", self.name, time.monotonic() - t0)
        return self

    # ------------------------------------------------------------------ network
    def _network(self) -> None:
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.name = self._requested_name or self.gateway
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_created = True
        _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # Only this bridge may route to 127.0.0.1 (DNAT of the API server and exposed ports).
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet").write_text("1\n")
        _run("iptables", "-t", "nat", "-N", self.chain)
        _run("iptables", "-N", self.chain)
        self._iptables_rules = [
            ("nat", ["PREROUTING", "-i", self.bridge, "-j", self.chain]),
            ("filter", ["FORWARD", "-i", self.bridge, "-j", self.chain]),
        ]
        for table, rule in self._iptables_rules:
            _run("iptables", "-t", table, "-I", *rule)
        # Pods talk to each other and to the host ports we expose, never further.
        _run("iptables", "-A", self.chain, "-o", self.bridge, "-j", "ACCEPT")
        _run("iptables", "-A", self.chain, "-j", "DROP")
        api_port = urllib.parse.urlparse(self.cluster.api_server_url).port
        service_ip = first_service_ip(self.cluster.service_cidr)
        _run(
            "iptables", "-t", "nat", "-A", self.chain, "-d", service_ip, "-p", "tcp",
            "--dport", "443", "-j", "DNAT", "--to-destination", f"127.0.0.1:{api_port}",
        )  # fmt: skip
        cni = self.root / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "safehold",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet), "gateway": self.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }
        (cni / "net.d" / "10-safehold.conflist").write_text(json.dumps(conflist, indent=2))

    def expose_loopback_port(self, port: int) -> str:
        """Make 127.0.0.1:`port` reachable from pods as `<gateway>:<port>`; returns that."""
        _run(
            "iptables", "-t", "nat", "-A", self.chain, "-d", self.gateway, "-p", "tcp",
            "--dport", str(port), "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}",
        )  # fmt: skip
        return f"{self.gateway}:{port}"

    # ------------------------------------------------------------------ containerd
    def _start_containerd(self, timeout: float) -> None:
        base = self.root / "containerd"
        (base / "certs.d").mkdir(parents=True, exist_ok=True)
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{base / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.root / "cni" / "net.d"}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{base / "certs.d"}"
"""
        (base / "config.toml").write_text(config)
        proc = ManagedProcess(
            "containerd",
            ["containerd", "--config", str(base / "config.toml"), "--log-level", "warn"],
            self.logs_dir / "containerd.log",
        )
        proc.start()
        self._containerd = proc
        self._processes.append(proc)
        proc.wait_ready(
            lambda: self._ctr("version", check=False).returncode == 0,
            timeout,
            what="serving",
        )

    def _ctr(self, *args: str, check: bool = True, timeout: float = 300.0) -> Any:
        return _run(
            "ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args,
            check=check, timeout=timeout,
        )  # fmt: skip

    def import_image(self, archive: Path) -> None:
        """Import an OCI/Docker image archive into the node's containerd (namespace k8s.io)."""
        self._ctr("images", "import", "--no-unpack", str(archive))

    def images(self) -> list[str]:
        out = self._ctr("images", "ls", "-q").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    # ------------------------------------------------------------------ credentials
    def _client_cert(self, name: str, cn: str, org: str | None) -> tuple[Path, Path]:
        d = self.root / "pki"
        d.mkdir(parents=True, exist_ok=True)
        ca_cert = self.cluster.ca_cert
        ca_key = ca_cert.with_name("ca.key")
        subj = f"/CN={cn}" + (f"/O={org}" if org else "")
        key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
        ext = d / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
        _run(
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", subj,
        )  # fmt: skip
        _run(
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
            str(ca_key), "-CAcreateserial", "-CAserial", str(d / "ca.srl"), "-days", "30",
            "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
        key.chmod(0o600)
        return crt, key

    def _kubeconfig(self, name: str, cn: str, org: str | None) -> Path:
        crt, key = self._client_cert(name, cn, org)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.cluster.api_server_url,
                        "certificate-authority": str(self.cluster.ca_cert),
                    },
                }
            ],
            "users": [
                {"name": cn, "user": {"client-certificate": str(crt), "client-key": str(key)}}
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": cn}}],
            "current-context": "local",
        }
        path = self.root / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------------ scheduler, kubelet
    def _start_scheduler(self) -> None:
        kubeconfig = self._kubeconfig("kube-scheduler", "system:kube-scheduler", None)
        (port,) = free_ports(1)
        proc = ManagedProcess(
            "kube-scheduler",
            [
                str(binaries.find("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            self.logs_dir / "kube-scheduler.log",
        )
        proc.start()
        self._processes.append(proc)

    def _start_kubelet(self) -> None:
        kubeconfig = self._kubeconfig("kubelet", f"system:node:{self.name}", "system:nodes")
        kubelet_port, healthz_port = free_ports(2)
        root_dir = self.root / "kubelet"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.gateway,
            "port": kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
                "x509": {},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.root / "pod-logs"),
            "podCIDR": str(self.subnet),
            "resolvConf": "",
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "protectKernelDefaults": False,
            "oomScoreAdj": 0,
            "localStorageCapacityIsolation": False,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "0s",
            "httpCheckFrequency": "0s",
        }
        config_path = self.root / "kubelet-config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = ManagedProcess(
            "kubelet",
            [
                str(binaries.find("kubelet")),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root_dir}",
                f"--cert-dir={self.root / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.gateway}",
                "--v=2",
            ],
            self.logs_dir / "kubelet.log",
        )
        proc.start()
        self._processes.append(proc)
        self._kubelet = proc

    def node_ready(self) -> bool:
        try:
            node = self.cluster.kube.get(f"/api/v1/nodes/{self.name}")
        except KubeError:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float) -> float:
        """Wait for Ready, then lift the taints the node lifecycle controller would lift.

        kubelet registers with `node.kubernetes.io/not-ready:NoSchedule`; the harness runs no
        node lifecycle controller (components.CONTROLLERS), so nothing else removes it.
        """
        waited = self._kubelet.wait_ready(self.node_ready, timeout, what="Ready")
        node = self.cluster.kube.get(f"/api/v1/nodes/{self.name}")
        taints = [
            t
            for t in node.get("spec", {}).get("taints", []) or []
            if not t["key"].startswith("node.kubernetes.io/")
        ]
        self.cluster.kube.patch(
            f"/api/v1/nodes/{self.name}",
            {"spec": {"taints": taints or None}},
            content_type=MERGE_PATCH,
        )
        return waited

    # ------------------------------------------------------------------ teardown
    def stop(self) -> None:
        """Stop everything and remove the node's bridge, rules, namespaces, mounts and cgroups."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        for proc in reversed(self._processes):
            if proc.name != "containerd":
                self._quietly(proc.stop, 10.0)
        netns = self._sandbox_netns() if self._containerd and self._containerd.running() else []
        if self._containerd is not None and self._containerd.running():
            self._quietly(self._kill_containers)
            self._quietly(self._containerd.stop, 10.0)
        for path in netns:
            self._quietly(_run, "umount", path, check=False)
            with contextlib.suppress(OSError):
                Path(path).unlink()
        self._quietly(self._unmount_under, self.root)
        self._quietly(self._remove_cgroups)
        self._quietly(self._remove_fixed_paths)
        for table, rule in self._iptables_rules:
            self._quietly(_run, "iptables", "-t", table, "-D", *rule, check=False)
        for table in ("nat", "filter"):
            self._quietly(_run, "iptables", "-t", table, "-F", self.chain, check=False)
            self._quietly(_run, "iptables", "-t", table, "-X", self.chain, check=False)
        if self._bridge_created:
            self._quietly(_run, "ip", "link", "del", self.bridge, check=False)

    @staticmethod
    def _quietly(fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (OSError, RuntimeError, subprocess.SubprocessError, ProcessError):
            log.exception("real node teardown step %s failed", getattr(fn, "__name__", fn))

    def _containers(self) -> list[str]:
        out = self._ctr("containers", "ls", "-q", check=False).stdout
        return [c.strip() for c in out.splitlines() if c.strip()]

    def _sandbox_netns(self) -> list[str]:
        paths: list[str] = []
        for cid in self._containers():
            info = self._ctr("containers", "info", cid, check=False).stdout
            with contextlib.suppress(ValueError, KeyError, TypeError):
                spec = json.loads(info)["Spec"]
                for ns in spec["linux"]["namespaces"]:
                    if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/"):
                        paths.append(ns["path"])
        return sorted(set(paths))

    def _kill_containers(self) -> None:
        for cid in self._containers():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False, timeout=30)
        deadline = time.monotonic() + 15
        for cid in self._containers():
            while time.monotonic() < deadline:
                if self._ctr("tasks", "delete", cid, check=False, timeout=30).returncode == 0:
                    break
                if "not found" in self._ctr("tasks", "ps", cid, check=False).stderr:
                    break
                time.sleep(0.2)
            self._ctr("containers", "delete", cid, check=False, timeout=30)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        prefix = str(root.resolve()) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix):
                mounts.append(mount_point)
        for mount_point in sorted(set(mounts), key=len, reverse=True):
            _run("umount", "-l", mount_point, check=False)

    def _remove_fixed_paths(self) -> None:
        """Our log symlinks, the files of FIXED_PATHS we made, and its directories when empty.

        An empty directory there serves nobody: a concurrent node's kubelet only logs that it
        could not link a container log, and its shims make the socket directory again.
        """
        prefix = str(self.root.resolve()) + "/"
        if KUBELET_LOG_LINKS.is_dir():
            for link in KUBELET_LOG_LINKS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(prefix):
                    link.unlink()
        for path in sorted(FIXED_PATHS, key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()  # only when empty
                elif path not in self._preexisting:
                    path.unlink()

    def _make_cgroups(self) -> None:
        """The kubelet's cgroup root must exist in every v1 hierarchy (cpuset: with cpus, mems)."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if not hierarchy.is_dir() or hierarchy.is_symlink():
                continue
            top = hierarchy / self.cgroup_root
            top.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / name).exists():
                    (top / name).write_text((hierarchy / name).read_text())

    def _remove_cgroups(self) -> None:
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / self.cgroup_root
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()


WORKLOAD_CONTROLLERS = ("deployment-controller", "replicaset-controller")


def start_workload_controllers(
    node: RealNode, controllers: tuple[str, ...] = WORKLOAD_CONTROLLERS
) -> ManagedProcess:
    """A second kube-controller-manager running only `controllers` (Deployments by default).

    The harness's controller manager runs just what the integration tier needs
    (components.CONTROLLERS, no Deployments); the end-to-end round trip installs the operator
    as a Deployment. It uses the cluster's admin kubeconfig, binds 127.0.0.1 and is stopped
    with the node.
    """
    (port,) = free_ports(1)
    proc = ManagedProcess(
        "kube-controller-manager-workloads",
        [
            str(binaries.find("kube-controller-manager")),
            f"--kubeconfig={node.cluster.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={node.root / 'kcm-workloads-certs'}",
            "--leader-elect=false",
            f"--controllers={','.join(controllers)}",
            "--profiling=false",
            "--v=1",
        ],
        node.logs_dir / "kube-controller-manager-workloads.log",
    )
    proc.start()
    node._processes.append(proc)
    return proc
