"""Opt-in end-to-end tier on kind (pytest-kind). Runs only with SAFEHOLD_E2E_KIND=1 and a
Docker engine that answers `docker info`; everywhere else it is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _kind_unavailable() -> str | None:
    if os.environ.get("SAFEHOLD_E2E_KIND") != "1":
        return "opt-in kind tier: run `make e2e` (sets SAFEHOLD_E2E_KIND=1) where Docker runs"
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    if probe.returncode != 0:
        return "no Docker engine answers `docker info`"
    return None


pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(_kind_unavailable() is not None, reason=_kind_unavailable() or ""),
]


def test_crds_install_on_kind(kind_cluster: Any) -> None:
    kind_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    out = kind_cluster.kubectl(
        "wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=safehold"
    )
    assert "condition met" in out
