"""Pure planning of pre/post hooks."""

from __future__ import annotations

from typing import Any

from safehold.api.content import Hook
from safehold.planning.hooks import HookOutcome, plan_hooks, verdict


def pod(
    name: str,
    labels: dict[str, str],
    phase: str = "Running",
    containers: tuple[str, ...] = ("app", "sidecar"),
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"containers": [{"name": c} for c in containers]},
        "status": {"phase": phase},
    }


def hook(**fields: Any) -> Hook:
    return Hook.model_validate(
        {
            "name": "flush",
            "podSelector": {"matchLabels": {"app": "web"}},
            "command": ["sync"],
            **fields,
        }
    )


def test_runs_in_every_running_matching_pod_first_container_by_default() -> None:
    pods = [
        pod("web-b", {"app": "web"}),
        pod("web-a", {"app": "web"}),
        pod("web-old", {"app": "web"}, phase="Succeeded"),
        pod("db", {"app": "db"}),
    ]
    planned, warnings = plan_hooks([hook(timeoutSeconds=5)], pods)
    assert [(p.pod, p.container, p.command, p.timeout_seconds) for p in planned] == [
        ("web-a", "app", ("sync",), 5),
        ("web-b", "app", ("sync",), 5),
    ]
    assert warnings == []


def test_named_container_and_missing_container() -> None:
    planned, warnings = plan_hooks(
        [hook(container="sidecar"), hook(name="other", container="nope")],
        [pod("web-a", {"app": "web"})],
    )
    assert [(p.hook, p.container) for p in planned] == [("flush", "sidecar")]
    assert warnings == ["hook other: pod web-a has no container nope"]


def test_a_hook_without_pods_is_a_warning() -> None:
    planned, warnings = plan_hooks([hook()], [pod("db", {"app": "db"})])
    assert planned == []
    assert warnings == ["hook flush: no running pod matches its podSelector"]


def test_on_error_decides_between_error_and_warning() -> None:
    [strict] = plan_hooks([hook(onError="Fail")], [pod("web-a", {"app": "web"})])[0]
    [lenient] = plan_hooks([hook(name="soft", onError="Continue")], [pod("web-a", {"app": "web"})])[
        0
    ]
    errors, warnings = verdict(
        [
            HookOutcome(strict, False, "exit code 1"),
            HookOutcome(lenient, False, "timed out after 30s"),
            HookOutcome(strict, True, ""),
        ]
    )
    assert errors == ["hook flush in shop/web-a: exit code 1"]
    assert warnings == ["hook soft in shop/web-a: timed out after 30s"]


def test_hook_output_is_bounded_and_counts_what_it_dropped() -> None:
    from safehold.kube.execs import BoundedOutput

    output = BoundedOutput(limit=100)
    for i in range(1000):
        output.add(f"line {i}\n")
    assert len(output.text) == 100
    assert output.dropped == sum(len(f"line {i}\n") for i in range(1000)) - 100
    assert output.tail(1) == f"[{output.dropped} characters of output dropped] line 999"
