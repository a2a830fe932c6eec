"""Run a command in a container through the pods/exec API (a kubelet does the work)."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL

from safehold.planning.hooks import HookExec, HookOutcome

# A hook's output is kept up to this many characters (its end, where errors are); the rest
# is counted and dropped, so a chatty command cannot fill the operator's memory.
MAX_OUTPUT = 64 * 1024


class BoundedOutput:
    """The last `limit` characters of a stream, and how many were dropped before them."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.limit = limit
        self.text = ""
        self.dropped = 0

    def add(self, chunk: str | None) -> None:
        if not chunk:
            return
        self.text += chunk
        if len(self.text) > self.limit:
            cut = len(self.text) - self.limit
            self.dropped += cut
            self.text = self.text[cut:]

    def tail(self, lines: int = 3) -> str:
        last = "\n".join(self.text.strip().splitlines()[-lines:])
        return f"[{self.dropped} characters of output dropped] {last}" if self.dropped else last


def _collect(resp: Any, output: BoundedOutput, timeout: float) -> bool:
    """Read the exec's output as it comes until it ends; False when it timed out."""
    deadline = time.monotonic() + timeout
    while resp.is_open():
        left = deadline - time.monotonic()
        if left <= 0:
            resp.close()
            return False
        resp.update(timeout=min(1.0, left))
        if resp.peek_stdout():
            output.add(resp.read_stdout())
        if resp.peek_stderr():
            output.add(resp.read_stderr())
    output.add(resp.read_stdout())
    output.add(resp.read_stderr())
    return True


def run_exec(core: client.CoreV1Api, plan: HookExec) -> HookOutcome:
    """Execute without a shell; the outcome carries the exit status and the output's tail."""
    output = BoundedOutput()
    try:
        resp: Any = stream(
            core.connect_get_namespaced_pod_exec,
            plan.pod,
            plan.namespace,
            container=plan.container,
            command=list(plan.command),
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        if not _collect(resp, output, plan.timeout_seconds):
            return HookOutcome(plan, False, f"timed out after {plan.timeout_seconds}s")
        status = json.loads(resp.read_channel(ERROR_CHANNEL) or "{}")
    except Exception as err:  # API errors, a pod gone meanwhile, a refused upgrade
        return HookOutcome(plan, False, f"exec failed: {err}")
    if status.get("status") == "Success":
        return HookOutcome(plan, True, output.tail())
    message = f"{status.get('message', 'command failed')}; {output.tail()}".strip()
    return HookOutcome(plan, False, message)
