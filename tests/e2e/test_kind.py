"""The end-to-end round trip (tests/e2e/roundtrip.py) on kind, through pytest-kind.

Opt-in: runs only with SAFEHOLD_E2E_KIND=1 (`make e2e`) and a Docker engine that answers
`docker info`; everywhere else it is skipped with the reason, and the same scenario runs on the
real node of `tools/localcluster` instead (tests/node/test_e2e_round_trip.py, in `make test`).

The three images are built with Docker from the files the real node builds them from with
podman: our `Dockerfile` (on debian:<release>-slim, pins from `tools/image args`),
tools/images/postgres.Containerfile and tools/images/seaweedfs.Containerfile (the pinned `weed`
binary of `make tools`), then loaded into kind. kind has cluster DNS and kube-proxy, so the
database target names the PostgreSQL Service and one RestoreRequest restores everything; its
local-path provisioner (StorageClass `standard`) plays the part of the real node's hostPath
provisioner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e2e.roundtrip import IMAGE, PG_IMAGE, SEAWEEDFS_IMAGE, Platform, run_round_trip

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


_REASON = _kind_unavailable()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


class KindPlatform:
    """A pytest-kind cluster as a `roundtrip.Platform`; kubectl and helm are our pinned ones."""

    storage_class = "standard"
    service_dns = True

    def __init__(self, cluster: Any) -> None:
        self.kubeconfig = Path(cluster.kubeconfig_path).resolve()

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        from localcluster import binaries

        argv = [str(binaries.find("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args[:3])} failed: {done.stderr}")
        return done.stdout

    def helm(self, *args: str) -> str:
        from helmchart import helm

        return helm(*args, "--kubeconfig", str(self.kubeconfig), timeout=400).stdout


def _docker_build(tag: str, containerfile: Path, context: Path, *build_args: str) -> None:
    subprocess.run(
        ["docker", "build", "-t", tag, "-f", str(containerfile), *build_args, str(context)],
        check=True,
        timeout=1800,
    )


def _build_images(tmp: Path) -> list[str]:
    """Our image, the PostgreSQL image and the SeaweedFS image, built with Docker."""
    from localcluster import binaries

    args = subprocess.run(
        [str(REPO / "tools" / "image"), "args"], capture_output=True, text=True, check=True
    ).stdout.split()
    _docker_build(IMAGE, REPO / "Dockerfile", REPO, *args)
    images = REPO / "tools" / "images"
    major = ["--build-arg", f"POSTGRESQL_MAJOR={binaries.pinned_versions()['POSTGRESQL_MAJOR']}"]
    _docker_build(PG_IMAGE, images / "postgres.Containerfile", images, *major)
    context = tmp / "seaweedfs"
    context.mkdir()
    shutil.copy2(binaries.find("weed"), context / "weed")
    _docker_build(SEAWEEDFS_IMAGE, images / "seaweedfs.Containerfile", context)
    return [IMAGE, PG_IMAGE, SEAWEEDFS_IMAGE]


@pytest.fixture(scope="module")
def platform(kind_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    for image in _build_images(tmp_path_factory.mktemp("images")):
        kind_cluster.load_docker_image(image)
    return KindPlatform(kind_cluster)


def test_backup_delete_restore_round_trip(platform: KindPlatform, tmp_path: Path) -> None:
    timings = run_round_trip(platform, REPO / "charts" / "safehold", tmp_path)
    print("round trip timings (s):", timings)
