"""`LocalCluster`: etcd + kube-apiserver + kube-controller-manager + SeaweedFS + node agent.

Everything listens on 127.0.0.1 only, on ports chosen free at start, with keys and credentials
generated per run. Logs, data and configuration live in one work dir which is removed on
teardown unless `keep_workdir` is set (the pytest fixture sets it when a test failed).

    with LocalCluster() as cluster:
        api = cluster.api_client()
        cluster.create_bucket("backups")

Startup is as parallel as the components allow: etcd, SeaweedFS, kube-apiserver and
kube-controller-manager are all launched at once (the API server retries etcd, the controller
manager waits for the API server), then the harness waits for each to report ready.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from localcluster import binaries, pki
from localcluster.components import CONTROLLERS, ApiServer, ControllerManager, Etcd, SeaweedFS
from localcluster.kube import Kube, KubeError, api_client
from localcluster.nodeagent import NODE_NAME, NodeAgent
from localcluster.process import ManagedProcess

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("localcluster")

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "weed")
OPTIONAL_BINARIES = ("kubectl", "restic")
S3_REGION = "us-east-1"

_T = TypeVar("_T")


class LocalCluster:
    """A throw-away local control plane plus S3, for integration tests and `make demo`."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        keep_workdir: bool = False,
        node_agent: bool = True,
        node_name: str = NODE_NAME,
        service_cidr: str = "10.96.0.0/16",
        startup_timeout: float = 90.0,
    ) -> None:
        self._requested_workdir = Path(workdir).resolve() if workdir is not None else None
        self.keep_workdir = keep_workdir
        self.with_node_agent = node_agent
        self.node_name = node_name
        self.service_cidr = service_cidr
        self.startup_timeout = startup_timeout
        self.admin_token = secrets.token_hex(32)
        self.startup_seconds: float | None = None
        self.versions: dict[str, str] = {}
        self._workdir: Path | None = None
        self._etcd: Etcd | None = None
        self._apiserver: ApiServer | None = None
        self._kcm: ControllerManager | None = None
        self._seaweedfs: SeaweedFS | None = None
        self._agent: NodeAgent | None = None
        self._kube: Kube | None = None
        self._stopped = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ properties
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("LocalCluster not started")
        return self._workdir

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user `safehold-admin`, group system:masters, bearer token)."""
        return self.workdir / "kubeconfig"

    @property
    def api_server_url(self) -> str:
        return self._need(self._apiserver).url

    @property
    def ca_cert(self) -> Path:
        """CA of the API server's serving certificate (also the in-cluster `kube-root-ca.crt`)."""
        return self._need(self._apiserver).pki.ca_cert

    @property
    def s3_endpoint_url(self) -> str:
        return self._need(self._seaweedfs).endpoint_url

    @property
    def s3_endpoint(self) -> str:
        """Alias of `s3_endpoint_url`."""
        return self.s3_endpoint_url

    @property
    def s3_access_key(self) -> str:
        return self._need(self._seaweedfs).access_key

    @property
    def s3_secret_key(self) -> str:
        return self._need(self._seaweedfs).secret_key

    @property
    def s3_tenant_keys(self) -> tuple[str, str]:
        """Keys of the S3 identity that may use only buckets named `tenant-*`."""
        weed = self._need(self._seaweedfs)
        return weed.tenant_access_key, weed.tenant_secret_key

    @property
    def s3_region(self) -> str:
        return S3_REGION

    @property
    def node_agent(self) -> NodeAgent:
        return self._need(self._agent)

    @property
    def node_root(self) -> Path:
        """Root directory of the node agent (PVC directories, pod directories, container logs)."""
        return self.workdir / "node"

    @property
    def controllers(self) -> tuple[str, ...]:
        return CONTROLLERS

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The server processes of the cluster by component name."""
        procs: dict[str, ManagedProcess] = {}
        for comp in (self._etcd, self._apiserver, self._kcm, self._seaweedfs):
            if comp is not None:
                procs[comp.process.name] = comp.process
        return procs

    @staticmethod
    def _need(value: _T | None) -> _T:
        if value is None:
            raise RuntimeError("LocalCluster not started (or component disabled)")
        return value

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self._started:
            raise RuntimeError("LocalCluster already started")
        self._started = True
        t0 = time.monotonic()
        found = binaries.ensure(*REQUIRED_BINARIES)
        self._workdir = self._make_workdir()
        atexit.register(self.stop)
        try:
            self._start(found, t0)
        except BaseException:
            log.error("local cluster failed to start; logs in %s", self.logs_dir)
            self.keep_workdir = True
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        log.info("local cluster ready in %.1fs (work dir %s)", self.startup_seconds, self.workdir)
        return self

    def _make_workdir(self) -> Path:
        if self._requested_workdir is None:
            return Path(tempfile.mkdtemp(prefix="safehold-localcluster-"))
        wd = self._requested_workdir
        if wd.exists() and any(wd.iterdir()):
            raise RuntimeError(f"work dir {wd} is not empty; give a new or empty directory")
        wd.mkdir(parents=True, exist_ok=True)
        return wd

    def _start(self, found: dict[str, Path], t0: float) -> None:
        wd = self.workdir
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=6, thread_name_prefix="lc")
        try:
            names = [*REQUIRED_BINARIES, *(n for n in OPTIONAL_BINARIES if self._has(n))]
            version_futures = {n: pool.submit(binaries.version_of, n) for n in names}
            keys = pki.generate(wd / "pki", self.service_cidr)

            # Processes are started from this thread: they get SIGKILL if it dies (pdeathsig).
            self._etcd = Etcd(wd)
            self._etcd.start()
            self._seaweedfs = SeaweedFS(wd)
            self._seaweedfs.start()
            self._apiserver = ApiServer(
                wd, self._etcd.client_url, keys, self.service_cidr, self.admin_token
            )
            self._apiserver.start()
            self._kcm = ControllerManager(wd, self._apiserver, keys)
            self._kcm.start()
            self._apiserver.write_kubeconfig(self.kubeconfig, self.admin_token, "safehold-admin")

            def remaining() -> float:
                return max(1.0, self.startup_timeout - (time.monotonic() - t0))

            self._etcd.wait_ready(remaining())
            waited = self._apiserver.wait_ready(remaining())
            log.info("kube-apiserver ready after %.1fs", time.monotonic() - t0)
            del waited
            seaweed_ready = pool.submit(self._seaweedfs.wait_ready, remaining())
            kcm_ready = pool.submit(self._kcm.wait_ready, remaining())
            self._kube = Kube(self.kubeconfig)
            if self.with_node_agent:
                self._agent = NodeAgent(
                    self.kubeconfig,
                    self.node_root,
                    node_name=self.node_name,
                    path=self.agent_path(),
                    extra_env={
                        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                        "KUBERNETES_SERVICE_PORT": str(self._apiserver.port),
                        # Pods must never reach for cloud metadata endpoints.
                        "AWS_EC2_METADATA_DISABLED": "true",
                    },
                    kubelet_version=self._apiserver_git_version(),
                )
                self._agent.start(timeout=remaining())
            kcm_ready.result()
            seaweed_ready.result()
            self.versions = {n: f.result() for n, f in version_futures.items()}
            self.versions["kubernetes (API server /version)"] = self._apiserver_git_version()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _apiserver_git_version(self) -> str:
        return self._need(self._apiserver).version()["gitVersion"]

    @staticmethod
    def _has(name: str) -> bool:
        try:
            binaries.find(name)
        except binaries.MissingBinaryError:
            return False
        return True

    @staticmethod
    def agent_path() -> str:
        """PATH of pod processes: pinned tools, then the running Python's venv, then PATH."""
        parts = [str(binaries.tools_bin_dir()), str(Path(sys.executable).parent)]
        parts += [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
        seen: list[str] = []
        for p in parts:
            if p not in seen:
                seen.append(p)
        return os.pathsep.join(seen)

    def stop(self, keep_workdir: bool | None = None) -> None:
        """Stop every process (node agent pods first) and remove the work dir unless kept."""
        if keep_workdir is not None:
            self.keep_workdir = keep_workdir
        if self._stopped.is_set() or not self._started:
            return
        self._stopped.set()
        atexit.unregister(self.stop)
        if self._agent is not None:
            try:
                self._agent.stop()
            except Exception:
                log.exception("stopping the node agent failed")
        if self._kube is not None:
            self._kube.close()
        # The API server's clients go first, etcd last.
        first = [c.process for c in (self._kcm, self._seaweedfs, self._apiserver) if c]
        threads = [threading.Thread(target=p.stop, kwargs={"grace": 10.0}) for p in first]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self._etcd is not None:
            self._etcd.process.stop(grace=10.0)
        if self._workdir is not None:
            if self.keep_workdir:
                log.warning(
                    "local cluster work dir kept: %s (logs in %s)",
                    self._workdir,
                    self._workdir / "logs",
                )
            else:
                shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster (what `python -m localcluster up` exports)."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "SAFEHOLD_S3_ENDPOINT": self.s3_endpoint_url,
            "SAFEHOLD_S3_ACCESS_KEY": self.s3_access_key,
            "SAFEHOLD_S3_SECRET_KEY": self.s3_secret_key,
            "SAFEHOLD_S3_REGION": self.s3_region,
            "SAFEHOLD_LOCALCLUSTER_WORKDIR": str(self.workdir),
            "SAFEHOLD_NODE_ROOT": str(self.node_root),
        }

    def api_client(self) -> Any:
        """A new `kubernetes.client.ApiClient` for the admin kubeconfig."""
        return api_client(self.kubeconfig)

    @property
    def kube(self) -> Kube:
        """The harness's own plain-JSON client (admin)."""
        return self._need(self._kube)

    def s3_client(self, access_key: str | None = None, secret_key: str | None = None) -> S3Client:
        """A boto3 S3 client for SeaweedFS (path-style addressing, generated credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            aws_access_key_id=access_key if access_key is not None else self.s3_access_key,
            aws_secret_access_key=secret_key if secret_key is not None else self.s3_secret_key,
            region_name=self.s3_region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (no error when it already exists)."""
        s3 = self.s3_client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)

    def pvc_path(self, namespace: str, claim: str) -> Path:
        """Local directory the node agent mounts for PVC `claim` in `namespace`."""
        return self.node_agent.pvc_path(namespace, claim)

    def create_namespace(
        self, name: str, *, timeout: float = 30.0, labels: dict[str, str] | None = None
    ) -> None:
        """Create a namespace and wait for its `default` ServiceAccount (pods need it)."""
        meta = {"name": name, "labels": dict(labels or {})}
        try:
            self.kube.post(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
        self.wait_for_service_account(name, "default", timeout=timeout)

    def wait_for_service_account(self, namespace: str, name: str, *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
                return
            except KubeError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def log_versions(self, printer: Any = None) -> list[str]:
        """Lines 'component: version' for the test log."""
        lines = [f"{name}: {version}" for name, version in sorted(self.versions.items())]
        for line in lines:
            log.info("local cluster component %s", line)
            if printer is not None:
                printer(line)
        return lines
