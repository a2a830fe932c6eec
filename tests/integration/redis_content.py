"""Redis content of every type for round-trip tests (mover and operator tiers): what is
written, and a comparable reading of it."""

from __future__ import annotations

from localcluster.databases import Redis

LIBRARY = """#!lua name=safehold_test
redis.register_function('greet', function(keys, args) return 'Grüß ' .. args[1] end)
"""


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
