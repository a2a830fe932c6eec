"""Real database servers for tests and benchmarks: PostgreSQL, MariaDB, Redis, on 127.0.0.1.

Each server runs from the Debian packages (`tools/bootstrap debian`) in its own temporary
directory, on a free port bound to 127.0.0.1 only, with a generated password, as a
`ManagedProcess` (own process group, killed with the test run). We run as root, so PostgreSQL
runs as the `postgres` OS user (`setpriv`), MariaDB with `--user=root`. Authentication is real
(SCRAM for PostgreSQL, `mysql_native_password` users for MariaDB, `requirepass` for Redis).

Also: `S3Store`, SeaweedFS alone (no control plane) with one bucket, and `restic_env()` for a
repository in it, for mover tests that need only object storage.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from localcluster import binaries
from localcluster.components import LOCALHOST, SeaweedFS
from localcluster.pki import ServerTls
from localcluster.process import ManagedProcess, free_ports

PG_BIN = Path(os.environ.get("SAFEHOLD_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"


class DatabaseUnavailable(RuntimeError):
    """The server binaries are not installed (run `tools/bootstrap debian`)."""


def _workdir(prefix: str, owner: str | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"safehold-{prefix}-"))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOCALHOST, port)) == 0


class _Server:
    """A database server process of the harness in a work directory of its own."""

    STOP_GRACE = 15.0  # seconds from SIGTERM to SIGKILL
    process: ManagedProcess | None
    workdir: Path

    def kill(self) -> None:
        """SIGKILL the server and its children (a crash, not a shutdown)."""
        if self.process is not None:
            self.process.signal_group(9)
            self.process.wait(30)

    def stop(self, keep: bool = False) -> None:
        if self.process is not None:
            self.process.stop(grace=self.STOP_GRACE)
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _client(
    what: str, cmd: list[str], sql: str, env: Mapping[str, str] | None, timeout: float
) -> str:
    """Run a client tool with `sql` on stdin; its stdout, or RuntimeError with its stderr."""
    result = subprocess.run(
        cmd,
        input=sql,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr.strip()}")
    return result.stdout


class PostgreSQL(_Server):
    """`initdb` + `postgres` as the postgres OS user; superuser `postgres` with a password."""

    def __init__(self, workdir: Path | None = None, tls: ServerTls | None = None) -> None:
        if not (PG_BIN / "postgres").exists():
            raise DatabaseUnavailable(f"{PG_BIN}/postgres missing: run tools/bootstrap debian")
        self.workdir = workdir or _workdir("pg", PG_OS_USER)
        self.port = free_ports(1)[0]
        self.host = LOCALHOST
        self.user = "postgres"
        self.password = secrets.token_urlsafe(16)
        self.data = self.workdir / "data"
        self.tls = tls
        self.process: ManagedProcess | None = None

    def _as_postgres(self, *argv: str) -> list[str]:
        return ["setpriv", "--reuid", PG_OS_USER, "--regid", PG_OS_USER, "--init-groups", *argv]

    def start(self, timeout: float = 60) -> PostgreSQL:
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        entry = pwd.getpwnam(PG_OS_USER)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        subprocess.run(
            self._as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        pwfile.unlink()
        argv = self._as_postgres(
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOCALHOST}",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_wal_size=2GB",
            "-c",
            "shared_buffers=256MB",
            *self._tls_options(entry.pw_uid, entry.pw_gid),
        )
        self.process = ManagedProcess(
            "postgres", argv, self.workdir / "postgres.log", cwd=self.workdir
        ).start()
        self.process.wait_ready(self._ready, timeout, what="accepting connections")
        return self

    def _tls_options(self, uid: int, gid: int) -> list[str]:
        """ssl=on with the given certificate (a copy the postgres user owns), if any."""
        if self.tls is None:
            return []
        for source in (self.tls.cert, self.tls.key):
            copy = self.workdir / f"tls-{source.name}"
            shutil.copyfile(source, copy)
            os.chown(copy, uid, gid)
            copy.chmod(0o600)
        return [
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={self.workdir / f'tls-{self.tls.cert.name}'}",
            "-c",
            f"ssl_key_file={self.workdir / f'tls-{self.tls.key.name}'}",
        ]

    def _ready(self) -> bool:
        return (
            subprocess.run(
                [str(PG_BIN / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
                check=False,
                timeout=5,
            ).returncode
            == 0
        )

    def env(self, database: str = "postgres") -> dict[str, str]:
        """libpq environment for psql & co."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": database,
        }

    def psql(self, sql: str, database: str = "postgres", timeout: float = 600) -> str:
        """Run SQL through psql (stops at the first error); returns unaligned output."""
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        return _client("psql", cmd, sql, self.env(database), timeout)


class MariaDB(_Server):
    """`mariadb-install-db` + `mariadbd --user=root`; user `safehold`@`%` with a password and
    every privilege (the anonymous and passwordless accounts are removed)."""

    STOP_GRACE = 20.0

    def __init__(self, tls: ServerTls | None = None) -> None:
        self.mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not Path(self.mariadbd).exists() or not shutil.which("mariadb-install-db"):
            raise DatabaseUnavailable("mariadbd missing: run tools/bootstrap debian")
        self.workdir = _workdir("mariadb")
        self.port = free_ports(1)[0]
        self.host = LOCALHOST
        self.user = "safehold"
        self.password = secrets.token_urlsafe(16)
        self.data = self.workdir / "data"
        self.socket = self.workdir / "mariadb.sock"
        self.tls = tls
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 90) -> MariaDB:
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        argv = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.data}",
            "--user=root",
            f"--bind-address={LOCALHOST}",
            f"--port={self.port}",
            f"--socket={self.socket}",
            f"--pid-file={self.workdir / 'mariadb.pid'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=0",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--log-bin=0",
        ]
        if self.tls is not None:
            argv += [
                f"--ssl-cert={self.tls.cert}",
                f"--ssl-key={self.tls.key}",
                f"--ssl-ca={self.tls.ca_cert}",
            ]
        self.process = ManagedProcess(
            "mariadb", argv, self.workdir / "mariadb.log", cwd=self.workdir
        ).start()
        self.process.wait_ready(self.socket.exists, timeout, what="listening")
        # root authenticates by unix_socket (we are root); create the password user.
        self.root_sql(
            f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'%' WITH GRANT OPTION;\n"
            "DELETE FROM mysql.global_priv WHERE User = '';\n"
            "FLUSH PRIVILEGES;\n"
        )
        self.process.wait_ready(lambda: _port_open(self.port), timeout, what="on TCP")
        return self

    def root_sql(self, sql: str) -> str:
        cmd = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "--batch", "-N"]
        return _client("mariadb", cmd, sql, None, 120)

    def sql(self, sql: str, database: str = "", timeout: float = 600) -> str:
        """Run SQL over TCP as the password user."""
        cmd = [
            "mariadb",
            "--no-defaults",
            "--protocol=TCP",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={self.user}",
            "--batch",
            "-N",
            "--default-character-set=utf8mb4",
        ]
        if database:
            cmd.append(f"--database={database}")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MYSQL_PWD": self.password}
        return _client("mariadb", cmd, sql, env, timeout)


class Redis(_Server):
    """`redis-server` on 127.0.0.1 with `requirepass`, no persistence."""

    STOP_GRACE = 10.0

    def __init__(self, tls: ServerTls | None = None) -> None:
        self.tls = tls
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise DatabaseUnavailable("redis-server missing: run tools/bootstrap debian")
        self.workdir = _workdir("redis")
        self.port = free_ports(1)[0]
        self.host = LOCALHOST
        self.password = secrets.token_urlsafe(16)
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 30) -> Redis:
        config = self.workdir / "redis.conf"
        # The password goes into a config file, not the server's command line.
        listen = f"port {self.port}\n"
        if self.tls is not None:
            # TLS only; clients are not asked for certificates of their own.
            listen = (
                f"port 0\ntls-port {self.port}\ntls-cert-file {self.tls.cert}\n"
                f"tls-key-file {self.tls.key}\ntls-ca-cert-file {self.tls.ca_cert}\n"
                "tls-auth-clients no\n"
            )
        config.write_text(
            f'{listen}bind {LOCALHOST}\nprotected-mode yes\nsave ""\n'
            f"appendonly no\ndir {self.workdir}\nrequirepass {self.password}\n"
        )
        config.chmod(0o600)
        self.process = ManagedProcess(
            "redis", [str(self.binary), str(config)], self.workdir / "redis.log"
        ).start()
        self.process.wait_ready(lambda: _port_open(self.port), timeout, what="listening")
        return self

    def _tls_args(self) -> list[str]:
        return [] if self.tls is None else ["--tls", "--cacert", str(self.tls.ca_cert)]

    def cli(self, *args: str, db: int = 0) -> str:
        target = ["-h", self.host, "-p", str(self.port), *self._tls_args(), "-n", str(db)]
        result = subprocess.run(
            ["redis-cli", *target, *args],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDISCLI_AUTH": self.password},
            capture_output=True,
            encoding="utf-8",
            errors="backslashreplace",
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or result.stdout.startswith(("ERR", "WRONGTYPE", "NOAUTH")):
            raise RuntimeError(f"redis-cli {args[0]} failed: {result.stdout}{result.stderr}")
        return result.stdout


class S3Store:
    """SeaweedFS alone (no control plane), one bucket; `restic_env()` for repositories in it."""

    def __init__(self, bucket: str = "safehold-db") -> None:
        self.workdir = _workdir("s3")
        self.seaweed = SeaweedFS(self.workdir)
        self.bucket = bucket
        self.region = "us-east-1"

    def start(self, timeout: float = 90) -> S3Store:
        import boto3
        from botocore.config import Config

        self.seaweed.start()
        self.seaweed.wait_ready(timeout)
        s3 = boto3.client(
            "s3",
            endpoint_url=self.seaweed.endpoint_url,
            aws_access_key_id=self.seaweed.access_key,
            aws_secret_access_key=self.seaweed.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=self.bucket)
        return self

    def restic_env(self, name: str, password: str = "db-test-password") -> dict[str, str]:  # noqa: S107
        """The mover environment of repository `repositories/<name>` (restic variables plus
        SAFEHOLD_RESTIC_OPTIONS and SAFEHOLD_RESTIC), as the Job builder would set them."""
        url = f"s3:{self.seaweed.endpoint_url}/{self.bucket}/repositories/{name}"
        return {
            "RESTIC_REPOSITORY": url,
            "RESTIC_PASSWORD": password,
            "AWS_ACCESS_KEY_ID": self.seaweed.access_key,
            "AWS_SECRET_ACCESS_KEY": self.seaweed.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "SAFEHOLD_RESTIC_OPTIONS": "-o s3.bucket-lookup=path --no-cache",
            "SAFEHOLD_RESTIC": str(binaries.find("restic")),
        }

    def stop(self, keep: bool = False) -> None:
        self.seaweed.process.stop()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def restic(env: Mapping[str, str], *args: str, timeout: float = 600) -> str:
    """Run restic against the repository of a `restic_env()` mapping; returns stdout."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | dict(env)
    options = full.pop("SAFEHOLD_RESTIC_OPTIONS", "").split()
    binary = full.pop("SAFEHOLD_RESTIC")
    return _client(f"restic {args[0]}", [binary, *options, *args], "", full, timeout)
