"""Rendering the Helm chart (charts/safehold) with the pinned helm (`tools/bootstrap helm`);
used by tests/chart and by the server-side dry run in tests/integration/test_chart.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from localcluster.binaries import pinned_versions

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "safehold"
RELEASE = "safehold"
NAMESPACE = "safehold-system"

# Every toggle away from its default, and custom resources.
NON_DEFAULT: dict[str, Any] = {
    "replicas": 2,
    "rbac": {"restoreWrite": False},
    "crds": {"install": False},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "prometheusRule": {"enabled": True, "noSuccessHours": 8, "noSuccessfulDrillDays": 3},
    },
    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    "operator": {"watchNamespaces": ["team-a", "team-b"], "pruneInterval": "12h"},
    "movers": {"image": "registry.example.com/safehold:0.1.0"},
    "image": {"repository": "registry.example.com/safehold", "tag": "0.1.0"},
}


def pinned_kubernetes() -> str:
    return pinned_versions()["KUBERNETES_VERSION"]


class HelmError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def helm_binary() -> str | None:
    pinned = REPO / ".tools" / "bin" / "helm"
    if pinned.exists():
        return str(pinned)
    return shutil.which("helm")


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; with `check`, a non-zero exit raises showing helm's stderr."""
    binary = helm_binary()
    assert binary is not None, "helm is missing (tools/bootstrap helm)"
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/safehold-helm/cache"}
    env |= {"HELM_CONFIG_HOME": "/tmp/safehold-helm/config"}
    env |= {"HELM_DATA_HOME": "/tmp/safehold-helm/data"}
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise HelmError(result.returncode, [binary, *args], result.stdout, result.stderr)
    return result


def render_text(
    values: Mapping[str, Any] | None = None, tmp: Path | None = None, *extra: str
) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", pinned_kubernetes()]
    if values:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(path)]
    return helm(*args, *extra).stdout


def render(
    values: Mapping[str, Any] | None = None, tmp: Path | None = None
) -> list[dict[str, Any]]:
    """The chart's objects (hooks included) for `values`."""
    return [d for d in yaml.safe_load_all(render_text(values, tmp)) if d]


def by_kind(docs: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
