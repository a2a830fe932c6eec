"""What a drill's check does in a scratch database, per engine: count its rows (keys), answer
a probe, drop it. Used by `safehold mover db-verify` and `db-drop` (movers/db_verify.py).

A probe runs read-only where the engine allows it (PostgreSQL `default_transaction_read_only`,
MySQL `SET SESSION TRANSACTION READ ONLY`, Redis: only commands Redis flags `readonly`), with a
time limit, and never as a client command: psql gets the query with `-c` (sent to the server
as it is), mariadb with `--binary-mode` (client commands off), Redis as one command.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from safehold.contract import env as menv
from safehold.contract.result import MoverError
from safehold.movers import dbtools, mysql, postgres, redis
from safehold.planning import database_checks as checks
from safehold.planning import rowcounts

_PG_NULL = "\x1dNULL\x1d"  # how psql shows an SQL NULL here: no real value looks like it


@dataclass(frozen=True)
class Engine:
    """The verify-side operations of one engine."""

    count: Callable[[menv.DbConfig, str], tuple[list[rowcounts.TableCount], str]]
    answer: Callable[[menv.DbConfig, str, str], str | None]
    drop: Callable[[menv.DbConfig, Sequence[str]], tuple[list[str], list[str]]]
    probe: Callable[[menv.DbConfig], Any]


class ProbeError(Exception):
    """A probe's query could not run (its error is the probe's result, not the mover's)."""


# ----------------------------------------------------------------------------- PostgreSQL
def pg_answer(cfg: menv.DbConfig, database: str, query: str) -> str | None:
    if query.lstrip().startswith("\\"):
        raise ProbeError("a psql meta-command is not a query")
    limits = f"-c default_transaction_read_only=on -c statement_timeout={cfg.probe_timeout}s"
    env = postgres.libpq_env(cfg, database) | {"PGOPTIONS": limits}
    cmd = [dbtools.which("psql"), "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    cmd += ["-F", "\x1f", "-R", "\x1e", "-P", f"null={_PG_NULL}", "-c", query]
    proc = dbtools.run_tool(cmd, dbtools.base_env(env), timeout=cfg.probe_timeout + 30)
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        reason = postgres.classify(text, "")
        if reason:  # the server, not the query: the mover's failure
            raise MoverError(reason, dbtools.tail(text))
        raise ProbeError(dbtools.tail(text, 2))
    out = proc.stdout.decode(errors="replace")
    if not out.strip("\n"):
        raise ProbeError("the query returned no rows")
    first = out.split("\x1e", 1)[0].split("\x1f", 1)[0].rstrip("\n")
    return None if first == _PG_NULL else first


def pg_drop(cfg: menv.DbConfig, names: Sequence[str]) -> tuple[list[str], list[str]]:
    def one(name: str) -> None:
        try:
            postgres.psql(cfg, 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);\n', name=name)
        except MoverError as err:
            if "syntax error" not in err.message:
                raise
            postgres.psql(cfg, 'DROP DATABASE IF EXISTS :"name";\n', name=name)  # before 13

    return _drop_each(names, one)


# ----------------------------------------------------------------------------- MySQL
_UNESCAPE = {"n": "\n", "t": "\t", "0": "\x00", "\\": "\\"}


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        out.append(_UNESCAPE.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


def mysql_answer(cfg: menv.DbConfig, database: str, query: str) -> str | None:
    statement = query.strip().rstrip(";")
    script = (
        "SET SESSION TRANSACTION READ ONLY;\n"
        f"SET SESSION max_statement_time = {cfg.probe_timeout};\n{statement};\n"
    )
    cmd = [dbtools.which("mariadb", "mysql"), "--no-defaults", *mysql.connection_args(cfg)]
    cmd += ["--default-character-set=utf8mb4", "--batch", "--skip-column-names", "--binary-mode"]
    cmd.append(f"--database={database}")
    proc = dbtools.run_tool(
        cmd,
        dbtools.base_env(mysql.tool_env(cfg)),
        input_bytes=script.encode(),
        timeout=cfg.probe_timeout + 30,
    )
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        reason = mysql.classify(text, "")
        if reason:
            raise MoverError(reason, dbtools.tail(text))
        raise ProbeError(dbtools.tail(text, 2))
    lines = proc.stdout.decode(errors="replace").splitlines()
    if not lines:
        raise ProbeError("the query returned no rows")
    first = lines[0].split("\t", 1)[0]
    return None if first == "NULL" else _unescape(first)


def mysql_drop(cfg: menv.DbConfig, names: Sequence[str]) -> tuple[list[str], list[str]]:
    def one(name: str) -> None:
        mysql.sql(cfg, f"DROP DATABASE IF EXISTS {mysql.identifier(name)};\n")

    return _drop_each(names, one)


def _drop_each(names: Sequence[str], drop: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Drop each scratch database (only names of that shape); (dropped, left with why)."""
    dropped, left = [], []
    for name in names:
        if not checks.is_scratch_name(name):
            left.append(f"{name}: not a scratch database name, never dropped")
            continue
        try:
            drop(name)
        except MoverError as err:
            left.append(f"{name}: {err.reason}: {dbtools.tail(err.message, 1)}")
            continue
        dropped.append(name)
    return dropped, left


# ----------------------------------------------------------------------------- Redis
def _client(cfg: menv.DbConfig, timeout: float | None = None) -> redis.Resp:
    try:
        client = redis.Resp.tcp(cfg)
    except ConnectionError as err:  # reset during AUTH
        raise MoverError("HostUnreachable", f"{cfg.host}:{cfg.port}: {err}") from None
    if timeout is not None:
        client.sock.settimeout(timeout)
    return client


def _keyspace(client: redis.Resp) -> dict[int, tuple[int, int]]:
    """Logical database → (keys, keys with a TTL)."""
    found = {}
    for key, value in redis._info(client, "keyspace").items():
        if key.startswith("db") and key[2:].isdigit():
            fields = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            found[int(key[2:])] = (int(fields.get("keys", 0)), int(fields.get("expires", 0)))
    return found


def marked(cfg: menv.DbConfig, marker: str) -> list[int]:
    """The logical databases holding a drill's marker: those its restore wrote into."""
    client = _client(cfg)
    try:
        return [db for db in sorted(_keyspace(client)) if _has(client, db, marker)]
    finally:
        client.close()


def _has(client: redis.Resp, db: int, key: str) -> bool:
    client.call("SELECT", db)
    return bool(client.call("EXISTS", key))


def unmark(cfg: menv.DbConfig, marker: str, dbs: Sequence[int]) -> None:
    """Remove the marker before counting and probes (they must see only the backup's keys)."""
    client = _client(cfg)
    try:
        for db in dbs:
            client.call("SELECT", db)
            client.call("DEL", marker)
    finally:
        client.close()


def redis_count(cfg: menv.DbConfig, database: str) -> tuple[list[rowcounts.TableCount], str]:
    client = _client(cfg)
    try:
        keys, volatile = _keyspace(client).get(int(database), (0, 0))
    finally:
        client.close()
    return [rowcounts.TableCount("", "keys", keys, True, volatile)], ""


def _text(reply: Any) -> str | None:
    if isinstance(reply, list):
        return _text(reply[0]) if reply else None
    if reply is None:
        return None
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _readonly(client: redis.Resp, command: str) -> bool:
    info = client.call("COMMAND", "INFO", command)
    if not info or not info[0]:
        raise ProbeError(f"{command} is not a Redis command")
    flags = {f.decode() if isinstance(f, bytes) else str(f) for f in info[0][2]}
    return "readonly" in flags and "blocking" not in flags


def redis_answer(cfg: menv.DbConfig, database: str, query: str) -> str | None:
    try:
        args = shlex.split(query)
    except ValueError as err:
        raise ProbeError(f"the command does not parse: {err}") from None
    if not args:
        raise ProbeError("no command")
    client = _client(cfg, timeout=cfg.probe_timeout)
    try:
        if not _readonly(client, args[0]):
            raise ProbeError(f"{args[0].upper()} is not a read-only command")
        client.call("SELECT", int(database))
        return _text(client.call(*args))
    except redis.RespError as err:
        raise ProbeError(str(err)) from None
    except (TimeoutError, OSError) as err:
        raise ProbeError(f"no answer: {err}") from None
    finally:
        client.close()


def redis_drop(cfg: menv.DbConfig, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Flush the logical databases holding the marker of each `drill_<suffix>` entry."""
    dropped, left = [], []
    for name in names:
        suffix = name.removeprefix("drill_")
        if name == suffix or not checks.is_scratch_name(name):
            left.append(f"{name}: not a drill's marker, nothing flushed")
            continue
        marker = checks.redis_marker(suffix)
        try:
            flush_marked(cfg, marked(cfg, marker), marker)
        except (MoverError, redis.RespError, OSError) as err:
            left.append(f"{name}: {err}")
            continue
        dropped.append(name)
    return dropped, left


def flush_marked(cfg: menv.DbConfig, dbs: Sequence[int], marker: str | None = None) -> None:
    """FLUSHDB each logical database (with `marker`: only while it still holds it)."""
    client = _client(cfg)
    try:
        for db in dbs:
            if marker is None or _has(client, db, marker):
                client.call("SELECT", db)
                client.call("FLUSHDB")
    finally:
        client.close()


ENGINES = {
    "postgresql": Engine(postgres.count_tables, pg_answer, pg_drop, postgres.probe),
    "mysql": Engine(mysql.count_tables, mysql_answer, mysql_drop, mysql.probe),
    "redis": Engine(redis_count, redis_answer, redis_drop, redis.probe),
}
