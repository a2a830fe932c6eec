"""Safehold's image, run for real with podman under the settings every pod of ours gets.

`make image` (tools/image) builds `localhost/safehold:dev` from the Dockerfile; `make test`
builds it before running the tests. Each container here runs with a read-only root filesystem,
no capabilities, `no-new-privileges`, the numeric non-root user 65532, a tmpfs on /tmp (the
emptyDir of a pod) and no network. The tests skip, saying why, where podman or the image is
missing; `SAFEHOLD_IMAGE` names another image to test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from localcluster.binaries import pinned_versions

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("SAFEHOLD_IMAGE", "localhost/safehold:dev")
PODMAN = shutil.which("podman")
# crun fails on the cgroup hybrid mode of our machines; runc works.
RUNTIME = os.environ.get("SAFEHOLD_OCI_RUNTIME", "/usr/sbin/runc")
UID = 65532

RESTRICTED = (
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    f"--user={UID}:{UID}",
    "--tmpfs=/tmp:rw,size=256m,mode=1777",
    "--network=none",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
)


def _podman(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    if PODMAN is None:
        raise RuntimeError("podman is not installed")
    return subprocess.run(
        [PODMAN, "--runtime", RUNTIME, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _skip_reason() -> str | None:
    if PODMAN is None:
        return "podman is not installed (`tools/bootstrap image` installs it)"
    if not Path(RUNTIME).exists():
        return f"OCI runtime {RUNTIME} is missing (`tools/bootstrap image` installs runc)"
    if _podman("image", "exists", IMAGE, timeout=60).returncode != 0:
        return f"image {IMAGE} is not built: run `make image`"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.image, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def run(
    *command: str,
    entrypoint: str | None = None,
    volumes: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`podman run` of the image with the restricted settings; `entrypoint=""` runs a tool."""
    opts = [*RESTRICTED]
    if entrypoint is not None:
        opts.append(f"--entrypoint={entrypoint}")
    for volume in volumes:
        opts.append(f"--volume={volume}")
    for key, value in (env or {}).items():
        opts.append(f"--env={key}={value}")
    return _podman("run", "--rm", *opts, IMAGE, *command)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def image_config() -> dict[str, object]:
    data = json.loads(ok(_podman("image", "inspect", IMAGE)))
    config: dict[str, object] = data[0]["Config"]
    return config


def test_image_runs_as_numeric_non_root_user_with_safehold_entrypoint(
    image_config: dict[str, object],
) -> None:
    assert image_config["User"] == f"{UID}:{UID}"
    assert image_config["Entrypoint"] == ["safehold"]
    entries = image_config["Env"]
    assert isinstance(entries, list)
    env = dict(str(e).partition("=")[::2] for e in entries)
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"


def test_safehold_version() -> None:
    out = ok(run("--version"))
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    assert out.strip() == f"safehold {version.group(1)}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("pg_dump", "--version"), r"^pg_dump \(PostgreSQL\) (\d+)\."),
        (("pg_restore", "--version"), r"^pg_restore \(PostgreSQL\) (\d+)\."),
        (("psql", "--version"), r"^psql \(PostgreSQL\) (\d+)\."),
        (("mariadb-dump", "--version"), r"^mariadb-dump .*MariaDB"),
        (("mariadb", "--version"), r"^mariadb .*MariaDB"),
        (("redis-cli", "--version"), r"^redis-cli \d+\.\d+"),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else "",
)
def test_database_clients(command: tuple[str, ...], expected: str) -> None:
    out = ok(run(*command, entrypoint=""))
    match = re.search(expected, out)
    assert match, out
    if command[0] in {"pg_dump", "pg_restore", "psql"}:
        assert match.group(1) == pinned_versions()["POSTGRESQL_MAJOR"]


def test_restic_is_the_pinned_version() -> None:
    out = ok(run("restic", "version", entrypoint=""))
    pinned = pinned_versions()["RESTIC_VERSION"].removeprefix("v")
    assert out.startswith(f"restic {pinned} "), out


def test_restic_round_trip_on_a_read_only_root() -> None:
    """Init, back up, check and restore in /tmp: restic's cache and locks fit the tmpfs."""
    script = (
        "set -e; restic init -q; restic backup -q /opt/safehold/bin; restic check -q;"
        " restic restore -q latest --target /tmp/out; test -x /tmp/out/opt/safehold/bin/safehold;"
        " touch /etc/probe 2>/dev/null && echo root-is-writable || echo root-is-read-only"
    )
    out = ok(
        run(
            "sh",
            "-c",
            script,
            entrypoint="",
            env={"RESTIC_REPOSITORY": "/tmp/repo", "RESTIC_PASSWORD": "image-test-only"},
        )
    )
    assert out.strip().splitlines()[-1] == "root-is-read-only"


def test_identity_inside_the_container() -> None:
    out = ok(run("sh", "-c", 'id -u; id -g; echo "$HOME"', entrypoint=""))
    assert out.split() == [str(UID), str(UID), "/tmp"]


def test_the_process_user_has_a_name() -> None:
    """Kopf asks getpass.getuser() at start-up; it must not fail for the default UID (passwd
    entry) nor for another UID a mover runs as (USER in the environment)."""
    code = "import getpass, os, pwd; print(getpass.getuser()); print(pwd.getpwuid(os.getuid())[0])"
    assert ok(run("python3", "-c", code, entrypoint="")).split() == ["safehold", "safehold"]
    restricted_as_1000 = [o for o in RESTRICTED if not o.startswith("--user=")]
    other = _podman(
        "run", "--rm", *restricted_as_1000, "--user=1000:1000", "--entrypoint=", IMAGE,
        "python3", "-c", "import getpass; print(getpass.getuser())",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "safehold"


def test_operator_and_mover_code_imports() -> None:
    """The whole package imports with bytecode writes impossible (read-only root)."""
    code = (
        "import pkgutil, importlib, safehold\n"
        "mods = [m.name for m in pkgutil.walk_packages(safehold.__path__, 'safehold.')\n"
        "        if not m.name.endswith('__main__')]\n"
        "[importlib.import_module(m) for m in mods]\n"
        "print(len(mods))\n"
    )
    out = ok(run("python3", "-c", code, entrypoint=""))
    assert int(out.strip()) > 10
    ok(run("operator", "--help"))


def test_crds_check_against_the_repository() -> None:
    """`safehold crds check` in the image agrees with crds/ when built from these sources."""
    built_from = ok(
        _podman(
            "image",
            "inspect",
            "--format",
            '{{ index .Config.Labels "io.safehold.source-digest" }}',
            IMAGE,
        )
    ).strip()
    current = subprocess.run(
        [str(REPO / "tools" / "image"), "digest"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    if built_from != current:
        pytest.skip(f"{IMAGE} was built from other sources than the checkout: run `make image`")
    ok(run("crds", "check", "--dir", "/crds", volumes=(f"{REPO / 'crds'}:/crds:ro",)))
