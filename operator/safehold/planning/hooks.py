"""Pure planning of pre/post backup hooks: which pods and containers run which command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from safehold.api.base import JSON
from safehold.api.content import Hook
from safehold.planning.selection import labels_match


@dataclass(frozen=True)
class HookExec:
    hook: str
    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    timeout_seconds: int
    on_error: str


@dataclass(frozen=True)
class HookOutcome:
    exec: HookExec
    ok: bool
    message: str


def plan_hooks(hooks: Sequence[Hook], pods: Sequence[JSON]) -> tuple[list[HookExec], list[str]]:
    """One execution per (hook, running pod it selects), in hook order; plus warnings for hooks
    that select no running pod (a hook with nothing to run on is not an error)."""
    planned: list[HookExec] = []
    warnings: list[str] = []
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    for hook in hooks:
        chosen = [
            p
            for p in running
            if labels_match((p.get("metadata") or {}).get("labels") or {}, hook.pod_selector)
        ]
        if not chosen:
            warnings.append(f"hook {hook.name}: no running pod matches its podSelector")
        for pod in sorted(
            chosen, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])
        ):
            containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
            container = hook.container or (containers[0] if containers else "")
            if hook.container and hook.container not in containers:
                warnings.append(
                    f"hook {hook.name}: pod {pod['metadata']['name']} has no container "
                    f"{hook.container}"
                )
                continue
            planned.append(
                HookExec(
                    hook=hook.name,
                    namespace=pod["metadata"]["namespace"],
                    pod=pod["metadata"]["name"],
                    container=container,
                    command=tuple(hook.command),
                    timeout_seconds=hook.timeout_seconds,
                    on_error=hook.on_error,
                )
            )
    return planned, warnings


def verdict(outcomes: Sequence[HookOutcome]) -> tuple[list[str], list[str]]:
    """(errors that fail the run, warnings): a failure of an onError=Continue hook is only a
    warning."""
    errors: list[str] = []
    warnings: list[str] = []
    for outcome in outcomes:
        if outcome.ok:
            continue
        text = (
            f"hook {outcome.exec.hook} in {outcome.exec.namespace}/{outcome.exec.pod}: "
            f"{outcome.message}"
        )
        (warnings if outcome.exec.on_error == "Continue" else errors).append(text)
    return errors, warnings
