"""The servers of the local cluster: etcd, kube-apiserver, kube-controller-manager, SeaweedFS.

Every one of them is bound to 127.0.0.1 explicitly (several listen on all interfaces or phone
home by default) on ports chosen free at start.
"""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from localcluster import binaries
from localcluster.pki import Pki
from localcluster.process import ManagedProcess, free_port_pair, free_ports

LOCALHOST = "127.0.0.1"

#: Controllers kube-controller-manager runs (names as in `kube-controller-manager --help`).
CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "clusterrole-aggregation-controller",
)


def http_get(
    url: str,
    *,
    token: str | None = None,
    cafile: Path | None = None,
    insecure: bool = False,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """GET `url` (loopback only); returns (status, body) also for HTTP error statuses."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError(f"refusing to contact a non-loopback address: {url}")
    context: ssl.SSLContext | None = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)  # noqa: S310 - loopback URL checked above
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


# ---------------------------------------------------------------------- etcd
class Etcd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.client_port, self.peer_port, self.metrics_port = free_ports(3)
        self.client_url = f"http://{LOCALHOST}:{self.client_port}"
        peer_url = f"http://{LOCALHOST}:{self.peer_port}"
        argv = [
            str(binaries.find("etcd")),
            "--name=localcluster",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=localcluster={peer_url}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls=http://{LOCALHOST}:{self.metrics_port}",
            # Throw-away data: durability buys nothing here and fsync dominates latency.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        self.process = ManagedProcess("etcd", argv, workdir / "logs" / "etcd.log")

    def start(self) -> None:
        self.process.start()

    def ready(self) -> bool:
        status, body = http_get(f"{self.client_url}/health", timeout=1.0)
        return status == 200 and json.loads(body).get("health") == "true"

    def wait_ready(self, timeout: float) -> float:
        return self.process.wait_ready(self.ready, timeout, what="healthy")


# ---------------------------------------------------------------------- kube-apiserver
class ApiServer:
    def __init__(
        self, workdir: Path, etcd_url: str, pki: Pki, service_cidr: str, admin_token: str
    ) -> None:
        self.workdir = workdir
        self.pki = pki
        self.admin_token = admin_token
        self.controller_manager_token = secrets.token_hex(24)
        (self.port,) = free_ports(1)
        self.url = f"https://{LOCALHOST}:{self.port}"
        cert_dir = workdir / "pki"
        tokens = cert_dir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},safehold-admin,safehold-admin,"system:masters"\n'
            f"{self.controller_manager_token},system:kube-controller-manager,"
            "system:kube-controller-manager\n"
        )
        tokens.chmod(0o600)
        argv = [
            str(binaries.find("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOCALHOST}",
            f"--advertise-address={LOCALHOST}",
            f"--secure-port={self.port}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={service_cidr}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ]
        self.process = ManagedProcess(
            "kube-apiserver", argv, workdir / "logs" / "kube-apiserver.log"
        )

    def start(self) -> None:
        self.process.start()

    def ready(self) -> bool:
        status, _ = http_get(
            f"{self.url}/readyz", token=self.admin_token, cafile=self.pki.ca_cert, timeout=2.0
        )
        return status == 200

    def wait_ready(self, timeout: float) -> float:
        return self.process.wait_ready(self.ready, timeout, what="ready (/readyz)")

    def version(self) -> dict[str, str]:
        status, body = http_get(
            f"{self.url}/version", token=self.admin_token, cafile=self.pki.ca_cert
        )
        if status != 200:
            raise RuntimeError(f"GET /version: HTTP {status}: {body[:200]!r}")
        data = json.loads(body)
        return {str(k): str(v) for k, v in data.items()}

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        """A kubeconfig for `user` authenticating with a bearer `token`."""
        import base64

        ca_data = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "safehold-local",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "safehold-local",
                    "context": {"cluster": "safehold-local", "user": user},
                }
            ],
            "current-context": "safehold-local",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path


# ---------------------------------------------------------------------- kube-controller-manager
class ControllerManager:
    def __init__(self, workdir: Path, apiserver: ApiServer, pki: Pki) -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        kubeconfig = apiserver.write_kubeconfig(
            workdir / "kube-controller-manager.kubeconfig",
            apiserver.controller_manager_token,
            "system:kube-controller-manager",
        )
        argv = [
            str(binaries.find("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--bind-address={LOCALHOST}",
            f"--secure-port={self.port}",
            f"--cert-dir={workdir / 'kcm-certs'}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--profiling=false",
            "--v=1",
        ]
        self.process = ManagedProcess(
            "kube-controller-manager", argv, workdir / "logs" / "kube-controller-manager.log"
        )

    def start(self) -> None:
        self.process.start()

    def ready(self) -> bool:
        status, _ = http_get(f"https://{LOCALHOST}:{self.port}/healthz", insecure=True)
        return status == 200

    def wait_ready(self, timeout: float) -> float:
        return self.process.wait_ready(self.ready, timeout, what="healthy (/healthz)")


# ---------------------------------------------------------------------- SeaweedFS
class SeaweedFS:
    """`weed mini`: master, volume server, filer and S3 gateway in one process, all on loopback.

    S3 identities come from an `-s3.config` JSON file holding an admin identity and a tenant
    identity (read and write on buckets named `tenant-*` only, as a cloud provider would give
    one team), each with keys generated per run. WebDAV and the Iceberg/Lance endpoints are
    disabled; the admin server (UI off) still listens, on loopback. Its worker dials the admin
    gRPC port at admin port + 10000, so the two are chosen as such a pair.
    """

    ACCESS_KEY_PREFIX = "SAFEHOLDLOCAL"
    TENANT_BUCKETS = "tenant-"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.access_key = self.ACCESS_KEY_PREFIX + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.tenant_access_key = self.ACCESS_KEY_PREFIX + "T" + secrets.token_hex(6).upper()
        self.tenant_secret_key = secrets.token_urlsafe(30)
        (
            self.master_port,
            self.master_grpc_port,
            self.volume_port,
            self.volume_grpc_port,
            self.filer_port,
            self.filer_grpc_port,
            self.s3_port,
            self.s3_grpc_port,
        ) = free_ports(8)
        self.admin_port, self.admin_grpc_port = free_port_pair(10000)
        self.endpoint_url = f"http://{LOCALHOST}:{self.s3_port}"
        data = workdir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        config = workdir / "seaweedfs-s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "tenant",
                            "credentials": [
                                {
                                    "accessKey": self.tenant_access_key,
                                    "secretKey": self.tenant_secret_key,
                                }
                            ],
                            "actions": [
                                f"{a}:{self.TENANT_BUCKETS}*"
                                for a in ("Read", "Write", "List", "Tagging")
                            ],
                        },
                    ]
                },
                indent=2,
            )
        )
        config.chmod(0o600)
        self.flags = [
            f"-dir={data}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            "-admin.ui=false",
            f"-s3.config={config}",
            f"-master.port={self.master_port}",
            f"-master.port.grpc={self.master_grpc_port}",
            f"-volume.port={self.volume_port}",
            f"-volume.port.grpc={self.volume_grpc_port}",
            f"-filer.port={self.filer_port}",
            f"-filer.port.grpc={self.filer_grpc_port}",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self.s3_grpc_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            f"-admin.port={self.admin_port}",
            f"-admin.port.grpc={self.admin_grpc_port}",
            f"-admin.dataDir={workdir / 'seaweedfs-admin'}",
        ]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in the work dir when
        # the path fits a socket address.
        if len(str(workdir)) < 80:
            self.flags += [
                f"-filer.localSocket={workdir / 'seaweedfs-filer.sock'}",
                f"-s3.localSocket={workdir / 'seaweedfs-s3.sock'}",
            ]
        argv = [str(binaries.find("weed")), "mini", *self.flags]
        self.process = ManagedProcess(
            "seaweedfs", argv, workdir / "logs" / "seaweedfs.log", cwd=data
        )

    def start(self) -> None:
        self.process.start()

    def ready(self) -> bool:
        # Unsigned requests get 403 once the S3 gateway serves with identities loaded.
        status, _ = http_get(f"{self.endpoint_url}/", timeout=1.0)
        return status == 403

    def wait_ready(self, timeout: float) -> float:
        return self.process.wait_ready(self.ready, timeout, what="serving S3")
