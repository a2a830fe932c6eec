"""Redis: an RDB snapshot over the network (`redis-cli --rdb -`), restored key by key.

Dump: `redis-cli --rdb -` asks the server for a full-sync RDB (what a replica receives) and
writes it to stdout, straight into restic as `redis/dump.rdb`. The password reaches redis-cli
through `REDISCLI_AUTH`.

Restore: the RDB is written to the scratch directory and loaded by a private `redis-server`
(Unix socket only, no TCP port, no persistence); every key of every logical database is then
copied into the target with `DUMP` + `PTTL` → `RESTORE key ttl payload REPLACE`, pipelined.
A key of the same name in the target is replaced; every other key of the target stays unless
SAFEHOLD_REDIS_FLUSH=true empties the target first (`FLUSHALL`). The target must run a Redis
at least as new as the mover's `redis-server` (the DUMP payload format). Redis 7 functions
(`FUNCTION` libraries, part of the RDB) are copied too: `FUNCTION DUMP` from the private
server, `FUNCTION RESTORE … REPLACE` into the target (a library of the same name is replaced).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safehold.contract import env as menv
from safehold.contract.result import (
    AUTHENTICATION_FAILED,
    HOST_UNREACHABLE,
    RESTORE_FAILED,
    TARGET_STARTING,
    TLS_FAILED,
    MoverError,
    Result,
)
from safehold.movers import dbtools
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
    dbtools.store(
        cfg, repo, result, "rdb", FILE, [cli, *cli_args(cfg), "--rdb", "-"], env, classify
    )


@contextlib.contextmanager
def _scratch_server(rdb: Path) -> Iterator[Resp]:
    """A private redis-server that loads `rdb`, reachable only through a Unix socket."""
    sock = rdb.parent / "redis.sock"
    server = dbtools.which("redis-server")
    options = {
        "port": "0",
        "unixsocket": str(sock),
        "unixsocketperm": "700",
        "dir": str(rdb.parent),
        "dbfilename": rdb.name,
        "save": "",
        "appendonly": "no",
        "databases": str(SCRATCH_DATABASES),
        "protected-mode": "yes",
    }
    argv = [server, *(a for k, v in options.items() for a in (f"--{k}", v))]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        client: Resp | None = None
        while client is None:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise MoverError(RESTORE_FAILED, f"the RDB did not load: {dbtools.tail(err)}")
            try:
                client = Resp.unix(str(sock))
                if _info(client, "persistence").get("loading") != "0":
                    client.close()
                    client = None
            except (OSError, ConnectionError, RespError):
                client = None
            if client is None:
                if time.monotonic() > deadline:
                    raise MoverError(RESTORE_FAILED, "the RDB did not load in 600 s")
                time.sleep(0.1)
        try:
            yield client
        finally:
            client.close()
    finally:
        proc.kill()
        proc.wait()


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


def _copy_functions(source: Resp, target: Resp) -> int:
    """Copy the RDB's function libraries (Redis 7); returns how many there were."""
    libraries = source.call("FUNCTION", "LIST")
    if not libraries:
        return 0
    try:
        target.call("FUNCTION", "RESTORE", source.call("FUNCTION", "DUMP"), "REPLACE")
    except RespError as err:
        raise MoverError(RESTORE_FAILED, f"FUNCTION RESTORE: {err}") from None
    return len(libraries)


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
            target = Resp.tcp(cfg)
            try:
                if cfg.redis_flush:
                    target.call("FLUSHALL")
                libraries = _copy_functions(source, target)
                keys = 0
                for db in dbs:
                    dest = int(cfg.mapping.get(str(db), str(db)))
                    keys += _copy_database(source, target, db, dest)
            except (OSError, ConnectionError) as err:
                raise MoverError(RESTORE_FAILED, f"target connection lost: {err}") from None
            except RespError as err:
                raise MoverError(RESTORE_FAILED, str(err)) from None
            finally:
                target.close()
    restored = f"{keys} keys" + (f", {libraries} function libraries" if libraries else "")
    dbtools.restored(result, "rdb", restored, FILE, snap, time.monotonic() - started)
