"""Redis: an RDB snapshot over the network (`redis-cli --rdb -`), restored key by key.

Dump: `redis-cli --rdb -` asks the server for a full-sync RDB (what a replica receives) and
writes it to stdout, straight into restic as `redis/dump.rdb`. The password reaches redis-cli
through `REDISCLI_AUTH`.

Restore: the RDB is written to the scratch directory and loaded by a private `redis-server`
(Unix socket only, no TCP port, no persistence, its log in the scratch directory; when it does
not load the RDB, the log's last warnings are the message). Every key of every logical database
is then copied into the target with `DUMP` + `PTTL` → `RESTORE key ttl payload`, pipelined
(`REPLACE`: a key a client wrote meanwhile gets the backup's value). Like the other engines, a
restore does not mix with what is there: a logical database of the target that already holds
keys, or a function library of the same name, is refused (DatabaseExists) before anything is
written, unless clean was asked for (SAFEHOLD_DB_RESTORE_CLEAN, `clean` in the RestoreRequest),
which empties each logical database the restore writes into (`FLUSHDB`) and replaces libraries
of the same name. The target must run a Redis at least as new as the mover's `redis-server`
(the DUMP payload format). Redis 7 functions (`FUNCTION` libraries, part of the RDB) are copied
with `FUNCTION DUMP` from the private server and `FUNCTION RESTORE … REPLACE` into the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safehold.contract import env as menv
from safehold.contract.result import (
    AUTHENTICATION_FAILED,
    HOST_UNREACHABLE,
    INVALID_MAPPING,
    RESTORE_FAILED,
    TARGET_STARTING,
    TLS_FAILED,
    MoverError,
    Result,
)
from safehold.movers import dbtools
from safehold.planning import database_checks, rowcounts
from safehold.storage import restic

FILE = "redis/dump.rdb"
BATCH = 500
SCRATCH_DATABASES = 256


class RespError(Exception):
    """An error reply of the server."""


class Resp:
    """A minimal RESP2 client: enough for AUTH, INFO, SCAN, DUMP/RESTORE, pipelined."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    @classmethod
    def tcp(cls, cfg: menv.DbConfig) -> Resp:
        try:
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout)
        except OSError as err:
            raise MoverError(
                HOST_UNREACHABLE, f"cannot connect to {cfg.host}:{cfg.port}: {err}"
            ) from None
        if cfg.tls_mode not in ("disable", "prefer"):
            context = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
            context.check_hostname = cfg.tls_mode == "verify-full"
            if cfg.tls_mode == "require":
                context.verify_mode = ssl.CERT_NONE
            try:
                sock = context.wrap_socket(sock, server_hostname=cfg.host)
            except (ssl.SSLError, ssl.CertificateError) as err:
                sock.close()
                raise MoverError(TLS_FAILED, f"TLS with {cfg.host}:{cfg.port}: {err}") from None
        sock.settimeout(max(cfg.connect_timeout, 60))
        client = cls(sock)
        client.auth(cfg.user, cfg.password)
        return client

    @classmethod
    def unix(cls, path: str) -> Resp:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.settimeout(120)
        return cls(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()

    def auth(self, user: str, password: str) -> None:
        if not password:
            return
        try:
            self.call("AUTH", *([user] if user else []), password)
        except RespError as err:
            raise MoverError(AUTHENTICATION_FAILED, f"AUTH rejected: {_first_word(err)}") from None

    @staticmethod
    def _encode(args: Sequence[bytes | str | int]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def _read(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"unexpected reply {line[:20]!r}")

    def pipeline(self, commands: Sequence[Sequence[bytes | str | int]]) -> list[Any]:
        """Send every command, then read every reply (errors returned, not raised)."""
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def call(self, *args: bytes | str | int) -> Any:
        reply = self.pipeline([args])[0]
        if isinstance(reply, RespError):
            raise reply
        return reply


def _first_word(err: Exception) -> str:
    return str(err).split(" ", 1)[0] or "error"


def _info(client: Resp, section: str) -> dict[str, str]:
    raw = client.call("INFO", section)
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def probe(cfg: menv.DbConfig) -> tuple[str, list[int]]:
    """(server version, logical databases holding keys)."""
    try:
        client = Resp.tcp(cfg)
    except (OSError, ConnectionError) as err:  # closed or reset during AUTH
        raise MoverError(HOST_UNREACHABLE, f"{cfg.host}:{cfg.port}: {err}") from None
    try:
        try:
            version = _info(client, "server").get("redis_version", "")
            loading = _info(client, "persistence").get("loading", "0")
            keyspace = _info(client, "keyspace")
        except RespError as err:
            reason = AUTHENTICATION_FAILED if "NOAUTH" in str(err) else "DatabaseError"
            if str(err).startswith("LOADING"):
                reason = TARGET_STARTING
            raise MoverError(reason, _first_word(err)) from None
        except (OSError, ConnectionError) as err:
            raise MoverError(HOST_UNREACHABLE, str(err)) from None
    finally:
        client.close()
    if loading != "0":
        raise MoverError(TARGET_STARTING, "the server is still loading its dataset")
    dbs = sorted(int(k[2:]) for k in keyspace if re.fullmatch(r"db\d+", k))
    return version, dbs


classify = dbtools.ErrorPatterns(
    auth=re.compile(r"NOAUTH|WRONGPASS|invalid password|AUTH failed"),
    tls=re.compile(r"Could not negotiate a TLS|SSL_connect|certificate verify failed"),
    unreachable=re.compile(r"Could not connect|Connection refused"),
).classify


def cli_args(cfg: menv.DbConfig) -> list[str]:
    args = ["-h", cfg.host, "-p", str(cfg.port), "--no-auth-warning"]
    if cfg.user:
        args += ["--user", cfg.user]
    if cfg.tls_mode not in ("disable", "prefer"):
        args.append("--tls")
        if cfg.tls_mode == "require":
            args.append("--insecure")
        if cfg.tls_ca_file:
            args += ["--cacert", cfg.tls_ca_file]
    return args


def dump(cfg: menv.DbConfig, repo: restic.Repository, result: Result) -> None:
    version, _ = probe(cfg)
    result.serverVersion = version
    cli = dbtools.which("redis-cli")
    result.toolVersion = dbtools.tool_version(cli)
    env = {"REDISCLI_AUTH": cfg.password} if cfg.password else {}
    with (
        dbtools.counts_store(cfg, repo, result) as store_counts,
        tempfile.TemporaryDirectory(dir=cfg.scratch_dir, prefix="safehold-rdb-") as tmp,
    ):
        # The RDB passes through a walker that counts its keys on the way (movers/rdb.py).
        counts = Path(tmp) / "counts.json"
        walker = [sys.executable, "-m", "safehold.movers.rdb", "--counts", str(counts), "--"]
        command = [*walker, cli, *cli_args(cfg), "--rdb", "-"]
        dbtools.store(cfg, repo, result, "rdb", FILE, command, env, classify)
        recorded = key_counts(counts)
        if recorded is None:
            result.warnings.append(
                "key counts not recorded: the RDB's format is not one Safehold reads"
            )
        store_counts(recorded)


def key_counts(path: Path) -> rowcounts.RowCounts | None:
    """The walker's counts as a counts document: one "table" of keys per logical database."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    databases = tuple(
        rowcounts.DatabaseCounts(db, (rowcounts.TableCount("", "keys", n, True, volatile),))
        for db, (n, volatile) in sorted(found.items(), key=lambda kv: int(kv[0]))
    )
    return rowcounts.RowCounts("redis", databases)


SOCKET = "redis.sock"  # relative to the server's dir: no Unix-socket path limit applies
LOG = "redis.log"
LOG_LINES = 3
LOG_CHARS = 600
_LOG_PREFIX = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ ([.\-*#]) ")


def server_log_reason(log: Path) -> str:
    """What the private server said last: its warnings (level #) if any, else its last
    lines, without the pid/time prefix; bounded. The log holds no key or value."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 16384))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return "the server left no log"
    parsed = [
        (m.group(1), ln[m.end() :]) if (m := _LOG_PREFIX.match(ln)) else ("", ln) for ln in lines
    ]
    parsed = [(level, text.strip()) for level, text in parsed if text.strip()]
    warnings = [text for level, text in parsed if level == "#"]
    chosen = (warnings or [text for _, text in parsed])[-LOG_LINES:]
    text = "; ".join(chosen) or "the server logged nothing"
    return text if len(text) <= LOG_CHARS else "…" + text[-LOG_CHARS:]


def _connect_private(directory: int) -> Resp:
    """The private server's socket, named through an open descriptor of its directory: a
    scratch directory's path may be longer than a Unix socket path may be (about 107 bytes)."""
    return Resp.unix(f"/proc/self/fd/{directory}/{SOCKET}")


@contextlib.contextmanager
def _scratch_server(rdb: Path) -> Iterator[Resp]:
    """A private redis-server that loads `rdb`, reachable only through a Unix socket."""
    workdir = rdb.parent
    log = workdir / LOG
    options = {
        "port": "0",
        "unixsocket": SOCKET,
        "unixsocketperm": "700",
        "dir": str(workdir),
        "dbfilename": rdb.name,
        "logfile": str(log),
        "save": "",
        "appendonly": "no",
        "databases": str(SCRATCH_DATABASES),
        "protected-mode": "yes",
    }
    argv = [dbtools.which("redis-server"), *(a for k, v in options.items() for a in (f"--{k}", v))]
    directory = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = _wait_loaded(proc, directory, log)
        try:
            yield client
        finally:
            client.close()
    finally:
        proc.kill()
        proc.wait()
        os.close(directory)


def _wait_loaded(proc: subprocess.Popen[bytes], directory: int, log: Path) -> Resp:
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise MoverError(
                RESTORE_FAILED,
                f"the RDB did not load: redis-server exited ({proc.returncode}): "
                + server_log_reason(log),
            )
        try:
            client = _connect_private(directory)
        except OSError:
            client = None  # not listening yet
        if client is not None:
            try:
                if _info(client, "persistence").get("loading") == "0":
                    return client
            except (OSError, ConnectionError, RespError):
                pass
            client.close()
        if time.monotonic() > deadline:
            raise MoverError(
                RESTORE_FAILED, f"the RDB did not load in 600 s: {server_log_reason(log)}"
            )
        time.sleep(0.1)


def _copy_database(source: Resp, target: Resp, db: int, dest: int) -> int:
    source.call("SELECT", db)
    target.call("SELECT", dest)
    cursor = b"0"
    copied = 0
    while True:
        cursor, keys = source.call("SCAN", cursor, "COUNT", BATCH)
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            replies = source.pipeline([c for k in chunk for c in (("DUMP", k), ("PTTL", k))])
            restores: list[Sequence[bytes | str | int]] = []
            for i, key in enumerate(chunk):
                payload, ttl = replies[2 * i], replies[2 * i + 1]
                if payload is None or isinstance(payload, RespError) or ttl == -2:
                    continue  # expired or deleted in the meantime
                restores.append(("RESTORE", key, max(int(ttl), 0), payload, "REPLACE"))
            for reply in target.pipeline(restores) if restores else []:
                if isinstance(reply, RespError):
                    raise MoverError(RESTORE_FAILED, f"RESTORE into db {dest}: {reply}")
            copied += len(restores)
        if cursor in (b"0", "0"):
            return copied


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _library_names(client: Resp) -> set[str]:
    """Names of the server's function libraries (Redis 7 `FUNCTION LIST`)."""
    names = set()
    for library in client.call("FUNCTION", "LIST") or []:
        fields = dict(zip(map(_text, library[::2]), library[1::2], strict=False))
        names.add(_text(fields.get("library_name", "")))
    return names


def _copy_functions(source: Resp, target: Resp) -> None:
    """Copy the RDB's function libraries (Redis 7): a library of the same name is replaced."""
    try:
        target.call("FUNCTION", "RESTORE", source.call("FUNCTION", "DUMP"), "REPLACE")
    except RespError as err:
        raise MoverError(RESTORE_FAILED, f"FUNCTION RESTORE: {err}") from None


def destinations(cfg: menv.DbConfig, dbs: Sequence[int]) -> dict[int, int]:
    """Logical database of the backup → the target's, after the mapping."""
    out: dict[int, int] = {}
    for db in dbs:
        raw = cfg.mapped(str(db))
        if not raw.isdigit() or int(raw) >= SCRATCH_DATABASES:
            raise MoverError(
                INVALID_MAPPING,
                f"databaseMapping: Redis logical databases are numbers; {db} maps to {raw!r}",
            )
        out[db] = int(raw)
    return out


def _make_room(cfg: menv.DbConfig, target: Resp, dests: set[int], libraries: set[str]) -> None:
    """Without clean, refuse a target whose databases already hold keys or that has a library
    of the same name (nothing is written then); with clean, empty those databases."""
    if cfg.restore_clean:
        for dest in sorted(dests):
            target.call("SELECT", dest)
            target.call("FLUSHDB")
        return
    busy = _info(target, "keyspace")
    existing = [f"keys in logical database {d}" for d in sorted(dests) if f"db{d}" in busy]
    if libraries:
        existing += [f"function library {n}" for n in sorted(libraries & _library_names(target))]
    dbtools.refuse_existing(
        cfg, existing, "flush those logical databases (and replace those libraries) first"
    )


def _mark(cfg: menv.DbConfig, target: Resp, dests: set[int]) -> None:
    """A drill's restore (SAFEHOLD_DB_SCRATCH_SUFFIX) marks each logical database it writes
    into, once it found them empty: only marked databases are ever flushed after the drill."""
    if not cfg.scratch_suffix:
        return
    marker = database_checks.redis_marker(cfg.scratch_suffix)
    for dest in sorted(dests):
        target.call("SELECT", dest)
        target.call("SET", marker, "1")


def restore(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    files: dict[str, dict[str, Any]],
    probed: tuple[str, list[int]],
) -> None:
    result.serverVersion = probed[0]
    result.toolVersion = dbtools.tool_version(dbtools.which("redis-server"))
    if FILE not in files:
        raise MoverError("SnapshotNotFound", f"{FILE} is not in the backup")
    snap = files[FILE]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cfg.scratch_dir, prefix="safehold-redis-") as tmp:
        os.chmod(tmp, 0o700)
        rdb = Path(tmp) / "dump.rdb"
        with rdb.open("wb") as fh:
            restic.dump_file(repo, str(snap["id"]), "/" + FILE, fh)
        with _scratch_server(rdb) as source:
            dbs = sorted(int(k[2:]) for k in _info(source, "keyspace") if re.fullmatch(r"db\d+", k))
            dests = destinations(cfg, dbs)
            libraries = _library_names(source)
            target = Resp.tcp(cfg)
            try:
                _make_room(cfg, target, set(dests.values()), libraries)
                _mark(cfg, target, set(dests.values()))
                if libraries:
                    _copy_functions(source, target)
                keys = sum(_copy_database(source, target, db, dests[db]) for db in dbs)
            except (OSError, ConnectionError) as err:
                raise MoverError(RESTORE_FAILED, f"target connection lost: {err}") from None
            except RespError as err:
                raise MoverError(RESTORE_FAILED, str(err)) from None
            finally:
                target.close()
    restored = f"{keys} keys" + (f", {len(libraries)} function libraries" if libraries else "")
    dbtools.restored(result, "rdb", restored, FILE, snap, time.monotonic() - started)
