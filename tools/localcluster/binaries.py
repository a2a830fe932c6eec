"""Pinned tool binaries of the local cluster.

`tools/bootstrap` (`make tools`) builds or installs every external tool at the version pinned in
`tools/versions.env` and links it into `<repo>/.tools/bin`. This module finds them there and
never falls back to whatever happens to be on `PATH`, so tests always run the pinned versions.
`SAFEHOLD_TOOLS_BIN` overrides the directory.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"

#: The command line that prints each tool's version (the argument list after the binary).
_VERSION_ARGS: dict[str, tuple[str, ...]] = {
    "etcd": ("--version",),
    "kube-apiserver": ("--version",),
    "kube-controller-manager": ("--version",),
    "kubectl": ("version", "--client"),
    "restic": ("version",),
    "weed": ("version",),
    "helm": ("version", "--short"),
}


class MissingBinaryError(RuntimeError):
    """A pinned binary is not installed."""


def tools_bin_dir() -> Path:
    """Directory holding the pinned binaries (`<repo>/.tools/bin`)."""
    override = os.environ.get("SAFEHOLD_TOOLS_BIN")
    return Path(override) if override else REPO_ROOT / ".tools" / "bin"


@functools.cache
def pinned_versions() -> dict[str, str]:
    """The `KEY=VALUE` pins of `tools/versions.env`."""
    pins: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        pins[key.strip()] = value.strip().strip("\"'")
    return pins


def find(name: str) -> Path:
    """Path of the pinned binary `name`; raises `MissingBinaryError` when it is not installed."""
    path = tools_bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(
            f"{name} not found at {path} (pinned binaries are missing): run `make tools`"
            " (or `tools/bootstrap`) first"
        )
    return path


@functools.cache
def version_of(name: str) -> str:
    """First line of the binary's version output, e.g. `Kubernetes v1.35.4`, for logging."""
    args = _VERSION_ARGS.get(name, ("--version",))
    result = subprocess.run(
        [str(find(name)), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout or result.stderr).strip()
    first = output.splitlines()[0].strip() if output else ""
    if result.returncode != 0 or not first:
        raise RuntimeError(f"`{name} {' '.join(args)}` failed ({result.returncode}): {output}")
    return first


def ensure(*names: str) -> dict[str, Path]:
    """Find several binaries at once, reporting every missing one in a single error."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        try:
            found[name] = find(name)
        except MissingBinaryError:
            missing.append(name)
    if missing:
        raise MissingBinaryError(
            f"pinned binaries missing from {tools_bin_dir()}: {', '.join(missing)};"
            " run `make tools` (or `tools/bootstrap`) first"
        )
    return found
