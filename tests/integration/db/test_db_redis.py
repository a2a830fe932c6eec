"""Redis: keys of every type, in two logical databases, with TTLs, survive the round trip."""

from __future__ import annotations

from conftest import Repo
from localcluster.databases import Redis


def populate(r: Redis) -> None:
    r.cli("FLUSHALL")
    r.cli("SET", "str", "Grüße 🚀")
    r.cli("SET", "ttl:str", "expires", "EX", "3600")
    r.cli("RPUSH", "list", "a", "b", "c", "ä")
    r.cli("SADD", "set", "x", "y", "z")
    r.cli("ZADD", "zset", "1.5", "one", "2", "two", "-3", "minus")
    r.cli("HSET", "hash", "f1", "v1", "f2", "ü")
    r.cli("EXPIRE", "hash", "7200")
    r.cli("XADD", "stream", "1-1", "field", "value")
    r.cli("XADD", "stream", "2-1", "field", "value2")
    r.cli("SETBIT", "bits", "100", "1")
    r.cli("PFADD", "hll", "a", "b", "c")
    # More keys than one SCAN / pipeline batch.
    r.cli("EVAL", "for i=1,3000 do redis.call('SET','bulk:'..i,i) end", "0")
    r.cli("SET", "other", "in db 1", db=1)
    r.cli("PEXPIRE", "other", "500000", db=1)


def content(r: Redis, db: int = 0) -> dict[str, str]:
    keys = sorted(r.cli("KEYS", "*", db=db).split())
    out: dict[str, str] = {}
    bulk = [k for k in keys if k.startswith("bulk:")]
    if bulk:  # thousands of strings: one round trip
        out["bulk"] = f"{len(bulk)}:" + r.cli(
            "EVAL",
            "local t={} for i=1,3000 do t[#t+1]=redis.call('GET','bulk:'..i) end"
            " return table.concat(t,',')",
            "0",
            db=db,
        )
    for key in (k for k in keys if not k.startswith("bulk:")):
        kind = r.cli("TYPE", key, db=db).strip()
        read = {
            "string": ("GET",),
            "list": ("LRANGE", key, "0", "-1"),
            "set": ("SMEMBERS", key),
            "zset": ("ZRANGE", key, "0", "-1", "WITHSCORES"),
            "hash": ("HGETALL", key),
            "stream": ("XRANGE", key, "-", "+"),
        }[kind]
        args = (*read, key) if len(read) == 1 else read
        value = r.cli(*args, db=db)
        if kind in ("set", "hash"):
            value = "\n".join(sorted(value.split("\n")))
        out[key] = f"{kind}:{value}"
    return out


def ttl(r: Redis, key: str, db: int = 0) -> int:
    return int(r.cli("TTL", key, db=db))


def test_redis_every_type_with_ttls(redis_server: Redis, repo: Repo) -> None:
    r = redis_server
    populate(r)
    before0, before1 = content(r, 0), content(r, 1)
    assert before0["bulk"].startswith("3000:")
    assert len(before0) == 10

    code, dumped = repo.mover("db-dump", "redis", r)
    assert code == 0, dumped
    assert [d["file"] for d in dumped["databases"]] == ["redis/dump.rdb"]

    r.cli("FLUSHALL")
    r.cli("SET", "unrelated", "stays")
    code, restored = repo.mover("db-restore", "redis", r)
    assert code == 0, restored
    after0 = content(r, 0)
    assert after0.pop("unrelated") == "string:stays\n"  # not flushed by default
    assert after0 == before0
    assert content(r, 1) == before1
    assert 3500 < ttl(r, "ttl:str") <= 3600
    assert 7100 < ttl(r, "hash") <= 7200
    assert 400 < ttl(r, "other", db=1) <= 500
    assert ttl(r, "str") == -1

    # Into another logical database, emptying the target first.
    code, restored = repo.mover("db-restore", "redis", r, db_mapping="0:5", redis_flush="true")
    assert code == 0, restored
    assert content(r, 0) == {}
    assert content(r, 5) == before0
    assert content(r, 1) == before1


LIBRARY = """#!lua name=safehold_test
redis.register_function('greet', function(keys, args) return 'Grüß ' .. args[1] end)
"""


def test_redis_functions_survive(redis_server: Redis, repo: Repo) -> None:
    """Function libraries are part of the RDB; the restore loads them into the target."""
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
    finally:
        other.stop()
