"""Fixtures of the database mover tests: real PostgreSQL, MariaDB and Redis servers and
SeaweedFS, all on 127.0.0.1 (tools/localcluster/databases.py), no control plane.

The movers run as the Job would run them: `python -m safehold mover db-dump|db-restore`, with
only the environment contract of `safehold.contract.env` (password in a file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.databases import (
    DatabaseUnavailable,
    MariaDB,
    PostgreSQL,
    Redis,
    S3Store,
    restic,
)


def _start(factory: Any) -> Any:
    try:
        return factory().start()
    except DatabaseUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def s3_store(request: pytest.FixtureRequest) -> Iterator[S3Store]:
    store = S3Store().start()
    yield store
    store.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> Iterator[PostgreSQL]:
    server: PostgreSQL = _start(PostgreSQL)
    yield server
    server.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def mariadb(request: pytest.FixtureRequest) -> Iterator[MariaDB]:
    server: MariaDB = _start(MariaDB)
    yield server
    server.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> Iterator[Redis]:
    server: Redis = _start(Redis)
    yield server
    server.stop(keep=request.session.testsfailed > 0)


@dataclass
class Repo:
    """One restic repository (per test) and the mover runner bound to it."""

    env: dict[str, str]
    workdir: Path

    def restic(self, *args: str) -> str:
        return restic(self.env, *args)

    def snapshots(self, backup: str) -> list[dict[str, Any]]:
        out = self.restic("snapshots", "--json", "--tag", f"safehold.io/backup={backup}")
        found: list[dict[str, Any]] = json.loads(out or "[]")
        return found

    def check(self) -> None:
        self.restic("check")

    def mover(
        self,
        verb: str,
        db_type: str,
        server: Any,
        *,
        backup: str = "shop/nightly",
        target: str = "main",
        password: str | None = None,
        **extra: str,
    ) -> tuple[int, dict[str, Any]]:
        """Run one mover; returns (exit code, result JSON). Asserts the termination message
        matches stdout and that no secret leaked into the output."""
        secret = password if password is not None else server.password
        pw_file = self.workdir / f"pw-{uuid.uuid4().hex[:6]}"
        pw_file.write_text(secret + "\n")
        pw_file.chmod(0o600)
        term = self.workdir / f"term-{uuid.uuid4().hex[:6]}"
        env = (
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.workdir),
                "SAFEHOLD_DB_TYPE": db_type,
                "SAFEHOLD_DB_HOST": server.host,
                "SAFEHOLD_DB_PORT": str(server.port),
                "SAFEHOLD_DB_USER": getattr(server, "user", ""),
                "SAFEHOLD_DB_PASSWORD_FILE": str(pw_file),
                "SAFEHOLD_BACKUP": backup,
                "SAFEHOLD_TARGET": target,
                "SAFEHOLD_TERMINATION_LOG": str(term),
                "SAFEHOLD_SCRATCH_DIR": str(self.workdir),
                "SAFEHOLD_DB_CONNECT_TIMEOUT": "5",
            }
            | self.env
            | {f"SAFEHOLD_{k.upper()}": v for k, v in extra.items()}
        )
        proc = subprocess.run(
            [sys.executable, "-m", "safehold", "mover", verb],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        pw_file.unlink()
        output = proc.stdout + proc.stderr + term.read_text()
        for value in (server.password, secret, self.env["RESTIC_PASSWORD"]):
            assert value not in output, "a secret leaked into the mover's output"
        assert self.env["AWS_SECRET_ACCESS_KEY"] not in output
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert json.loads(term.read_text())["ok"] == result["ok"]
        assert len(term.read_bytes()) <= 4096
        assert (proc.returncode == 0) == result["ok"], proc.stderr
        return proc.returncode, result


@pytest.fixture
def repo(s3_store: S3Store, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository per test; `restic check` must pass after the test."""
    env = s3_store.restic_env(f"db-{uuid.uuid4().hex[:8]}")
    restic(env, "init")
    tmp_path.chmod(0o700)
    repository = Repo(env, tmp_path)
    yield repository
    repository.check()
