"""`safehold operator` as a real process against a LocalCluster (tests and `make demo`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from localcluster import binaries
from localcluster.helpers import kubectl
from localcluster.process import ManagedProcess, free_ports

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "safehold-system"


def install_crds(cluster: LocalCluster, crds_dir: Path = REPO / "crds") -> None:
    """Apply the generated CRDs and wait until the API server serves them."""
    kubectl(cluster, "apply", "--server-side", "-f", str(crds_dir))
    kubectl(
        cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=safehold",
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return str(resp.read().decode())


class OperatorProcess:
    """The operator, started from the current Python environment, logging to a file."""

    running: ClassVar[set[OperatorProcess]] = set()
    """The instances of this test process that were started and not stopped: a module that
    plays the operator itself pauses them (one worker runs several modules in turn)."""

    def __init__(self, cluster: LocalCluster, log_path: Path | None = None) -> None:
        self.cluster = cluster
        self.metrics_port, self.health_port, self.gateway_port = free_ports(3)
        self.log_path = log_path or cluster.logs_dir / "safehold-operator.log"
        path = os.pathsep.join([str(binaries.tools_bin_dir()), os.environ.get("PATH", "")])
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PATH": path,
            "SAFEHOLD_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "SAFEHOLD_SCRATCH_DIR": str(cluster.workdir / "operator-scratch"),
            # Movers (local processes of the node agent) reach the gateway on loopback.
            "SAFEHOLD_GATEWAY_URL": f"http://127.0.0.1:{self.gateway_port}",
        }
        self._env = env
        self.process = self._new_process()

    def _new_process(self) -> ManagedProcess:
        return ManagedProcess(
            "safehold-operator",
            [
                sys.executable,
                "-m",
                "safehold",
                "operator",
                "--bind-address=127.0.0.1",
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                f"--gateway-port={self.gateway_port}",
            ],
            self.log_path,
            env=self._env,
        )

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        if not self.cluster.kube.get_or_none(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}"):
            self.cluster.create_namespace(OPERATOR_NAMESPACE)
        self.process.start()
        self.process.wait_ready(self._healthy, timeout, what="liveness endpoint answering")
        OperatorProcess.running.add(self)
        return self

    def _healthy(self) -> bool:
        try:
            _get(f"http://127.0.0.1:{self.health_port}/healthz")
        except OSError:
            return False
        return True

    def metrics(self) -> str:
        return _get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        OperatorProcess.running.discard(self)
        self.process.stop()

    def crash_and_restart(self, timeout: float = 60.0) -> None:
        """SIGKILL the operator (no clean shutdown, as in a node failure) and start it again
        on the same ports."""
        with self.stopped(timeout):
            pass

    @contextlib.contextmanager
    def stopped(self, timeout: float = 60.0) -> Iterator[None]:
        """The operator SIGKILLed (as in a node failure) for the block, then started again on
        the same ports."""
        self.process.signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)
        try:
            yield
        finally:
            self.process = self._new_process()
            self.process.start()
            self.process.wait_ready(self._healthy, timeout, what="liveness endpoint answering")
