"""Redis: keys of every type, in two logical databases, with TTLs, survive the round trip; a
target that holds keys is refused unless clean (which flushes the databases restored into);
the private server works from a scratch directory of any length, and when it cannot load an
RDB the message says why."""

from __future__ import annotations

from pathlib import Path

from conftest import Repo
from integration.redis_content import LIBRARY, content, populate, ttl
from localcluster.databases import Redis


def test_redis_every_type_with_ttls(redis_server: Redis, repo: Repo) -> None:
    r = redis_server
    populate(r)
    before0, before1 = content(r, 0), content(r, 1)
    assert before0["bulk"].startswith("3000:")
    assert len(before0) == 10

    code, dumped = repo.mover("db-dump", "redis", r)
    assert code == 0, dumped
    assert [d["file"] for d in dumped["databases"]] == ["redis/dump.rdb", "redis/counts.json"]

    r.cli("FLUSHALL")
    code, restored = repo.mover("db-restore", "redis", r)
    assert code == 0, restored
    assert content(r, 0) == before0
    assert content(r, 1) == before1
    assert 3500 < ttl(r, "ttl:str") <= 3600
    assert 7100 < ttl(r, "hash") <= 7200
    assert 400 < ttl(r, "other", db=1) <= 500
    assert ttl(r, "str") == -1

    # Into another logical database, flushing only the databases it writes into (5 and 1).
    r.cli("SET", "stale", "not in the backup", db=5)
    r.cli("SET", "stale", "not in the backup either", db=1)
    code, restored = repo.mover("db-restore", "redis", r, db_mapping="0:5", db_restore_clean="true")
    assert code == 0, restored
    assert content(r, 5) == before0
    assert content(r, 1) == before1
    assert content(r, 0) == before0  # not written into: untouched


def test_redis_target_holding_keys_is_refused_unless_clean(redis_server: Redis, repo: Repo) -> None:
    """Without clean nothing is mixed: a logical database that holds keys is refused before
    anything is written; with clean it is emptied first, keys not in the backup go."""
    r = redis_server
    r.cli("FLUSHALL")
    r.cli("SET", "kept", "from the backup")
    code, dumped = repo.mover("db-dump", "redis", r, backup="shop/refuse")
    assert code == 0, dumped

    r.cli("SET", "kept", "changed since")
    r.cli("SET", "newer", "written after the backup")
    code, refused = repo.mover("db-restore", "redis", r, backup="shop/refuse")
    assert (code, refused["reason"]) == (1, "DatabaseExists"), refused
    assert "keys in logical database 0" in refused["message"]
    assert "spec.databases.targets[].clean: true" in refused["message"]
    assert "SAFEHOLD_" not in refused["message"]
    assert r.cli("GET", "kept").strip() == "changed since"  # nothing written
    assert r.cli("GET", "newer").strip() == "written after the backup"

    code, restored = repo.mover(
        "db-restore", "redis", r, backup="shop/refuse", db_restore_clean="true"
    )
    assert code == 0, restored
    assert sorted(r.cli("KEYS", "*").split()) == ["kept"]
    assert r.cli("GET", "kept").strip() == "from the backup"


def test_redis_functions_survive(redis_server: Redis, repo: Repo) -> None:
    """Function libraries are part of the RDB; the restore loads them into the target. A
    library of the same name in the target is refused without clean, replaced with it."""
    r = redis_server
    r.cli("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    try:
        r.cli("SET", "fn:key", "v")
        code, dumped = repo.mover("db-dump", "redis", r, backup="shop/functions")
        assert code == 0, dumped
    finally:
        r.cli("FUNCTION", "DELETE", "safehold_test")
    other = Redis().start()
    try:
        code, restored = repo.mover("db-restore", "redis", other, backup="shop/functions")
        assert code == 0, restored
        assert "1 function libraries" in restored["databases"][0]["target"]
        assert other.cli("FCALL", "greet", "0", "Welt").strip() == "Grüß Welt"
        assert other.cli("GET", "fn:key").strip() == "v"

        other.cli("DEL", "fn:key")
        code, refused = repo.mover("db-restore", "redis", other, backup="shop/functions")
        assert (code, refused["reason"]) == (1, "DatabaseExists"), refused
        assert "function library safehold_test" in refused["message"]
        code, restored = repo.mover(
            "db-restore", "redis", other, backup="shop/functions", db_restore_clean="true"
        )
        assert code == 0, restored
        assert other.cli("FCALL", "greet", "0", "Welt").strip() == "Grüß Welt"
    finally:
        other.stop()


def test_redis_restores_from_a_long_scratch_path(redis_server: Redis, repo: Repo) -> None:
    """The private server's Unix socket lives in the scratch directory; a path longer than a
    socket path may be (about 107 bytes) used to fail with an empty message."""
    r = redis_server
    r.cli("FLUSHALL")
    r.cli("SET", "deep", "down")
    code, dumped = repo.mover("db-dump", "redis", r, backup="shop/long")
    assert code == 0, dumped
    deep = repo.workdir / ("scratch-" + "d" * 60) / ("x" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "safehold-redis-abcdefgh/redis.sock")) > 110

    r.cli("FLUSHALL")
    code, restored = repo.mover("db-restore", "redis", r, backup="shop/long", scratch_dir=str(deep))
    assert code == 0, restored
    assert r.cli("GET", "deep").strip() == "down"
    assert list(deep.iterdir()) == []  # the scratch directory is left empty


def _store_rdb(repo: Repo, backup: str, data: bytes, tmp: Path) -> None:
    """An RDB stored the way the dump stores one (same path, same tags)."""
    rdb = tmp / "fake.rdb"
    rdb.write_bytes(data)
    tags = [f"{k}={v}" for k, v in (("backup", backup), ("content", "database"),
            ("target", "main"), ("database", "rdb"))]  # fmt: skip
    repo.restic(
        "backup", "--stdin-from-command", "--stdin-filename", "redis/dump.rdb",
        *(a for t in tags for a in ("--tag", f"safehold.io/{t}")), "--", "cat", str(rdb),
    )  # fmt: skip


def test_an_rdb_the_server_cannot_load_says_why(
    redis_server: Redis, repo: Repo, tmp_path: Path
) -> None:
    """An RDB of a newer Redis (format 12, Redis 7.4) than the mover's redis-server reads:
    the message carries the server's own reason, and the target is left alone."""
    _store_rdb(
        repo, "shop/newer", b"REDIS0012" + b"\xfa\x09redis-ver\x057.4.1\xff" + b"\0" * 8, tmp_path
    )
    redis_server.cli("FLUSHALL")
    code, failed = repo.mover("db-restore", "redis", redis_server, backup="shop/newer")
    assert (code, failed["reason"]) == (1, "RestoreFailed"), failed
    assert failed["message"].startswith("the RDB did not load: redis-server exited"), failed
    assert "Can't handle RDB format version 12" in failed["message"], failed
    assert len(failed["message"]) < 1000
    assert redis_server.cli("DBSIZE").strip() == "0"
