"""Faults: each gives a specific reason, exit code 1, no snapshot registered, and the
repository still passes `restic check` (the `repo` fixture runs it after every test)."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conftest import Repo
from localcluster.databases import MariaDB, PostgreSQL, Redis
from localcluster.process import free_ports
from safehold.contract import env as menv

ENGINES = {"postgresql": "postgres", "mysql": "mariadb", "redis": "redis_server"}


def assert_failed(repo: Repo, backup: str, result: tuple[int, dict[str, Any]], reason: str) -> None:
    code, doc = result
    assert code == 1
    assert doc["ok"] is False
    assert doc["reason"] == reason, doc
    assert doc["message"]
    assert repo.snapshots(backup) == []


@pytest.mark.parametrize("db_type", sorted(ENGINES))
def test_wrong_password(db_type: str, repo: Repo, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(ENGINES[db_type])
    backup = f"shop/wrong-{db_type}"
    result = repo.mover("db-dump", db_type, server, backup=backup, password="not-the-password")
    assert_failed(repo, backup, result, "AuthenticationFailed")


@pytest.mark.parametrize("db_type", sorted(ENGINES))
def test_unreachable_host(db_type: str, repo: Repo, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(ENGINES[db_type])
    backup = f"shop/unreachable-{db_type}"
    result = repo.mover("db-dump", db_type, server, backup=backup, db_port=str(free_ports(1)[0]))
    assert_failed(repo, backup, result, "HostUnreachable")


@pytest.mark.parametrize("db_type", ["postgresql", "mysql"])
def test_missing_database(db_type: str, repo: Repo, request: pytest.FixtureRequest) -> None:
    server: PostgreSQL | MariaDB = request.getfixturevalue(ENGINES[db_type])
    backup = f"shop/missing-{db_type}"
    result = repo.mover("db-dump", db_type, server, backup=backup, db_databases="does_not_exist")
    assert_failed(repo, backup, result, "DatabaseNotFound")


def test_restore_of_missing_snapshot(repo: Repo, redis_server: Redis) -> None:
    code, doc = repo.mover("db-restore", "redis", redis_server, backup="shop/never-taken")
    assert (code, doc["reason"]) == (1, "SnapshotNotFound")


@pytest.mark.parametrize("db_type", ["postgresql", "mysql"])
def test_restore_from_a_snapshot_that_is_gone(
    db_type: str, repo: Repo, request: pytest.FixtureRequest
) -> None:
    """The files named by the operator point at a snapshot no longer in the repository: the
    restore fails with SnapshotNotFound and drops the database it had created for it."""
    server: PostgreSQL | MariaDB = request.getfixturevalue(ENGINES[db_type])
    target = f"gone_{uuid.uuid4().hex[:6]}"
    prefix, suffix = ("postgresql", ".dump") if db_type == "postgresql" else ("mysql", ".sql")
    gone = menv.encode_files({f"{prefix}/app{suffix}": ("0123abcd" * 8, 10)})
    code, doc = repo.mover("db-restore", db_type, server, db_files=gone, db_mapping=f"app:{target}")
    assert (code, doc["reason"]) == (1, "SnapshotNotFound"), doc
    assert f"{target} it had created was dropped again" in doc["message"]
    listed = (
        server.psql("SELECT datname FROM pg_database")
        if isinstance(server, PostgreSQL)
        else server.sql("SHOW DATABASES")
    )
    assert target not in listed


def test_postgres_restore_that_fails_half_way(repo: Repo, postgres: PostgreSQL) -> None:
    """pg_restore stops at an owner that does not exist on the target (the roles were not
    replayed): RestoreFailed naming it, and the database the restore had created is gone."""
    suffix = uuid.uuid4().hex[:6]
    db, role = f"half_{suffix}", f"owner_{suffix}"
    postgres.psql(f"CREATE ROLE {role}; CREATE DATABASE {db} OWNER {role};")
    postgres.psql(f"CREATE SCHEMA app AUTHORIZATION {role};", db)
    postgres.psql(
        "CREATE TABLE app.t AS SELECT g AS id, md5(g::text) AS v"
        " FROM generate_series(1, 200000) g;",
        db,
    )
    postgres.psql(f"ALTER TABLE app.t OWNER TO {role};", db)
    code, dumped = repo.mover(
        "db-dump", "postgresql", postgres, db_databases=db, pg_globals="false"
    )
    assert code == 0, dumped
    postgres.psql(f"DROP DATABASE {db}; DROP ROLE {role};")
    code, doc = repo.mover("db-restore", "postgresql", postgres, db_databases=db)
    assert (code, doc["reason"]) == (1, "RestoreFailed"), doc
    assert f'role "{role}" does not exist' in doc["message"]
    assert f"{db} it had created was dropped again" in doc["message"]
    assert db not in postgres.psql("SELECT datname FROM pg_database")


def test_server_killed_mid_dump(repo: Repo) -> None:
    """The second database's dump dies with its server: the first database's snapshot of
    the same run is forgotten too, so nothing of the target is registered."""
    pg = PostgreSQL().start()
    try:
        pg.psql("CREATE DATABASE small; CREATE DATABASE big;")
        pg.psql("CREATE TABLE t AS SELECT 1 AS x;", "small")
        pg.psql(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS pad"
            " FROM generate_series(1, 1500000) g;",
            "big",
        )
        backup = f"shop/killed-{uuid.uuid4().hex[:4]}"
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                repo.mover, "db-dump", "postgresql", pg, backup=backup, db_databases="small,big"
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not future.done():
                active = pg.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'big'"
                    " AND query LIKE 'COPY %'"
                ).strip()
                if active == "1":
                    time.sleep(0.3)  # let some of the table stream into the repository
                    pg.kill()
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the dump of 'big' was never seen running")
            result = future.result(timeout=300)
        assert_failed(repo, backup, result, "DumpFailed")
        assert "big" in result[1]["message"]
        # "small" and (stored beside the databases) the globals, if they were done in time.
        assert any(re.match(r"forgot [12] snapshot", w) for w in result[1]["warnings"])
        # The row counts' restic, started ahead of the counts, was interrupted: no lock left.
        assert repo.restic("list", "locks", "--no-lock").strip() == ""
    finally:
        pg.stop()
