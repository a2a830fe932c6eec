"""Small helpers for tests against a `LocalCluster`: the pinned kubectl and a polling wait."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from localcluster import binaries

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

T = TypeVar("T")


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited with {self.returncode}:\n"
            f"{self.stderr or ''}{self.stdout or ''}"
        )


def kubectl(
    cluster: LocalCluster,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against `cluster` (admin); stdout/stderr captured as text.

    With `check` (the default) a non-zero exit raises `KubectlError` showing stderr.
    """
    cmd = [str(binaries.find("kubectl")), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
    return result


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 60.0,
    what: str = "condition",
    interval: float = 0.2,
) -> T:
    """Call `probe` until it returns something truthy and return that; AssertionError on timeout.

    The last exception raised by `probe` (if any) is chained to the timeout error.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:
            last_exc, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from last_exc
        time.sleep(interval)
