"""Run a command in a container through the pods/exec API (a kubelet does the work)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL

from safehold.planning.hooks import HookExec, HookOutcome


def run_exec(core: client.CoreV1Api, plan: HookExec) -> HookOutcome:
    """Execute without a shell; the outcome carries the exit status and the output's tail."""
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
        resp.run_forever(timeout=plan.timeout_seconds)
        if resp.is_open():
            resp.close()
            return HookOutcome(plan, False, f"timed out after {plan.timeout_seconds}s")
        output = (resp.read_stdout() or "") + (resp.read_stderr() or "")
        status = json.loads(resp.read_channel(ERROR_CHANNEL) or "{}")
    except Exception as err:  # API errors, a pod gone meanwhile, a refused upgrade
        return HookOutcome(plan, False, f"exec failed: {err}")
    tail = "\n".join(output.strip().splitlines()[-3:])
    if status.get("status") == "Success":
        return HookOutcome(plan, True, tail)
    return HookOutcome(plan, False, f"{status.get('message', 'command failed')}; {tail}".strip())
