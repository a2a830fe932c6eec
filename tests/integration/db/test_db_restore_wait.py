"""A restore waits for its target: a server that comes up late is restored into, one that never
comes up fails with TargetNotReady after SAFEHOLD_DB_READY_TIMEOUT, a rejected password fails
at once."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import Repo
from localcluster.databases import PostgreSQL, Redis
from localcluster.process import free_ports

ENGINES = {"postgresql": "postgres", "mysql": "mariadb", "redis": "redis_server"}


def _start_late(repo: Repo, db_type: str, server: Any, delay: float, **extra: str) -> Any:
    """Start the restore while nothing listens on the server's port, start the server after
    `delay` seconds; returns (seconds the restore took, exit code, result)."""
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(
            repo.mover, "db-restore", db_type, server, db_ready_timeout="180", **extra
        )
        time.sleep(delay)
        assert not future.done(), future.result()
        try:
            server.start()
        except BaseException:
            future.cancel()
            raise
        code, doc = future.result(timeout=600)
    return time.monotonic() - started, code, doc


def test_postgres_restore_waits_for_a_server_started_late(repo: Repo, postgres: PostgreSQL) -> None:
    name = f"late_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE DATABASE {name};")
    postgres.psql(
        "CREATE TABLE t AS SELECT g AS id, 'zeile ' || g AS txt FROM generate_series(1, 5000) g;",
        name,
    )
    backup = f"shop/{name}"
    code, doc = repo.mover("db-dump", "postgresql", postgres, backup=backup, db_databases=name)
    assert code == 0, doc

    late = PostgreSQL()  # its port has no listener until start()
    try:
        seconds, code, doc = _start_late(repo, "postgresql", late, 4, backup=backup)
        assert code == 0, doc
        assert seconds > 4
        assert any("accepted connections after" in w for w in doc["warnings"]), doc
        assert late.psql("SELECT count(*), sum(id) FROM t;", name).strip() == "5000|12502500"
    finally:
        late.stop()


def test_redis_restore_waits_for_a_server_started_late(repo: Repo, redis_server: Redis) -> None:
    key = f"late:{uuid.uuid4().hex[:6]}"
    redis_server.cli("SET", key, "später")
    backup = f"shop/redis-{key[5:]}"
    code, doc = repo.mover("db-dump", "redis", redis_server, backup=backup)
    assert code == 0, doc

    late = Redis()
    try:
        seconds, code, doc = _start_late(repo, "redis", late, 3, backup=backup)
        assert code == 0, doc
        assert seconds > 3
        assert late.cli("GET", key).strip() == "später"
    finally:
        late.stop()


@pytest.mark.parametrize("db_type", sorted(ENGINES))
def test_a_target_that_never_comes_up_is_not_ready(db_type: str, repo: Repo) -> None:
    nobody = SimpleNamespace(
        host="127.0.0.1", port=free_ports(1)[0], user="", password="irrelevant-secret"
    )
    started = time.monotonic()
    code, doc = repo.mover(
        "db-restore", db_type, nobody, backup="shop/nowhere", db_ready_timeout="4"
    )
    seconds = time.monotonic() - started
    assert (code, doc["reason"]) == (1, "TargetNotReady"), doc
    assert "did not accept connections within 4 s" in doc["message"]
    assert "HostUnreachable" in doc["message"]
    assert 4 <= seconds < 30


@pytest.mark.parametrize("db_type", sorted(ENGINES))
def test_a_wrong_password_fails_at_once(
    db_type: str, repo: Repo, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(ENGINES[db_type])
    started = time.monotonic()
    code, doc = repo.mover(
        "db-restore",
        db_type,
        server,
        backup="shop/wrong-password",
        password="not-the-password",
        db_ready_timeout="300",
    )
    assert (code, doc["reason"]) == (1, "AuthenticationFailed"), doc
    assert time.monotonic() - started < 30
