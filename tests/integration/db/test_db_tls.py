"""TLS to the database: servers with a certificate from a CA made for the test run. With that CA
`verify-full` dumps and restores; with another CA, or none, the mover fails with TlsFailed
before anything is registered, and a restore does not wait for such a target."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from localcluster.databases import DatabaseUnavailable, MariaDB, PostgreSQL, Redis
from localcluster.pki import ServerTls, server_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServerTls, ServerTls]:
    """(the servers' CA and certificate, an unrelated CA)."""
    return (
        server_tls(tmp_path_factory.mktemp("tls-server")),
        server_tls(tmp_path_factory.mktemp("tls-other")),
    )


def _serve(server: Any) -> Iterator[Any]:
    """Start a test server (skipped where its package is missing) and stop it after."""
    try:
        server.start()
    except DatabaseUnavailable as err:
        pytest.skip(str(err))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_postgres(pki: tuple[ServerTls, ServerTls]) -> Iterator[PostgreSQL]:
    yield from _serve(PostgreSQL(tls=pki[0]))


@pytest.fixture(scope="module")
def tls_mariadb(pki: tuple[ServerTls, ServerTls]) -> Iterator[MariaDB]:
    yield from _serve(MariaDB(tls=pki[0]))


@pytest.fixture(scope="module")
def tls_redis(pki: tuple[ServerTls, ServerTls]) -> Iterator[Redis]:
    yield from _serve(Redis(tls=pki[0]))


def _ca_copy(repo: Repo, source: Path) -> str:
    """The CA as the mover gets it: a file of its own (a Secret key mounted as a file)."""
    path = repo.workdir / f"ca-{uuid.uuid4().hex[:6]}.crt"
    path.write_bytes(source.read_bytes())
    return str(path)


def test_postgres_verify_full_with_the_servers_ca(
    repo: Repo, tls_postgres: PostgreSQL, pki: tuple[ServerTls, ServerTls]
) -> None:
    db = f"tls_{uuid.uuid4().hex[:6]}"
    tls_postgres.psql(f"CREATE DATABASE {db};")
    tls_postgres.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;", db)
    ca = _ca_copy(repo, pki[0].ca_cert)
    backup = f"shop/{db}"
    tls = {"db_tls_mode": "verify-full", "db_tls_ca_file": ca}
    code, doc = repo.mover(
        "db-dump",
        "postgresql",
        tls_postgres,
        backup=backup,
        db_databases=db,
        pg_globals="false",
        **tls,
    )
    assert code == 0, doc
    code, doc = repo.mover(
        "db-restore",
        "postgresql",
        tls_postgres,
        backup=backup,
        db_mapping=f"{db}:{db}_copy",
        **tls,
    )
    assert code == 0, doc
    assert (
        tls_postgres.psql("SELECT count(*), sum(id) FROM t;", f"{db}_copy").strip() == "1000|500500"
    )


@pytest.mark.parametrize("ca", ["other", "none"])
def test_postgres_verify_full_with_a_wrong_or_missing_ca(
    ca: str, repo: Repo, tls_postgres: PostgreSQL, pki: tuple[ServerTls, ServerTls]
) -> None:
    backup = f"shop/tls-wrong-{ca}"
    tls = {"db_tls_mode": "verify-full"}
    if ca == "other":
        tls["db_tls_ca_file"] = _ca_copy(repo, pki[1].ca_cert)
    code, doc = repo.mover("db-dump", "postgresql", tls_postgres, backup=backup, **tls)
    assert (code, doc["reason"]) == (1, "TlsFailed"), doc
    assert repo.snapshots(backup) == []
    started = time.monotonic()
    code, doc = repo.mover(
        "db-restore", "postgresql", tls_postgres, backup=backup, db_ready_timeout="300", **tls
    )
    assert (code, doc["reason"]) == (1, "TlsFailed"), doc
    assert time.monotonic() - started < 30  # not retried as "not up yet"


def test_mariadb_verify_full_with_the_servers_ca(
    repo: Repo, tls_mariadb: MariaDB, pki: tuple[ServerTls, ServerTls]
) -> None:
    db = f"tls_{uuid.uuid4().hex[:6]}"
    tls_mariadb.sql(f"CREATE DATABASE {db};")
    tls_mariadb.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);", db)
    backup = f"shop/{db}"
    tls = {"db_tls_mode": "verify-full", "db_tls_ca_file": _ca_copy(repo, pki[0].ca_cert)}
    code, doc = repo.mover("db-dump", "mysql", tls_mariadb, backup=backup, db_databases=db, **tls)
    assert code == 0, doc
    code, doc = repo.mover(
        "db-restore", "mysql", tls_mariadb, backup=backup, db_mapping=f"{db}:{db}_copy", **tls
    )
    assert code == 0, doc
    assert tls_mariadb.sql("SELECT SUM(id) FROM t;", f"{db}_copy").strip() == "6"


def test_redis_verify_full_with_the_servers_ca(
    repo: Repo, tls_redis: Redis, pki: tuple[ServerTls, ServerTls]
) -> None:
    """redis-cli --tls takes the snapshot, the restore talks TLS too (its own client)."""
    tls_redis.cli("FLUSHALL")
    tls_redis.cli("SET", "greeting", "Grüße über TLS")
    tls_redis.cli("HSET", "h", "a", "1", "b", "2")
    tls_redis.cli("EXPIRE", "h", "3600")
    backup = "shop/tls-redis"
    tls = {"db_tls_mode": "verify-full", "db_tls_ca_file": _ca_copy(repo, pki[0].ca_cert)}
    code, doc = repo.mover("db-dump", "redis", tls_redis, backup=backup, **tls)
    assert code == 0, doc
    tls_redis.cli("FLUSHALL")
    code, doc = repo.mover("db-restore", "redis", tls_redis, backup=backup, **tls)
    assert code == 0, doc
    assert tls_redis.cli("GET", "greeting").strip() == "Grüße über TLS"
    assert tls_redis.cli("HGETALL", "h").split() == ["a", "1", "b", "2"]
    assert 0 < int(tls_redis.cli("TTL", "h")) <= 3600


@pytest.mark.parametrize(("db_type", "fixture"), [("mysql", "tls_mariadb"), ("redis", "tls_redis")])
def test_verify_full_with_another_ca(
    db_type: str,
    fixture: str,
    repo: Repo,
    pki: tuple[ServerTls, ServerTls],
    request: pytest.FixtureRequest,
) -> None:
    server = request.getfixturevalue(fixture)
    backup = f"shop/tls-{db_type}-wrong"
    tls = {"db_tls_mode": "verify-full", "db_tls_ca_file": _ca_copy(repo, pki[1].ca_cert)}
    code, doc = repo.mover("db-dump", db_type, server, backup=backup, **tls)
    assert (code, doc["reason"]) == (1, "TlsFailed"), doc
    assert repo.snapshots(backup) == []
    # The restore fails on the connection too (checked before it looks for snapshots).
    code, doc = repo.mover("db-restore", db_type, server, backup=backup, **tls)
    assert (code, doc["reason"]) == (1, "TlsFailed"), doc
