"""The environment contract of the database movers (`safehold mover db-dump` / `db-restore`).

The operator's Job builder fills these variables; the mover reads nothing else (no secret is
ever passed on a command line). Secrets belong in a Secret-backed env var or, better, a file in a
memory-backed volume (`*_FILE`).

Target (both verbs):

- ``SAFEHOLD_DB_TYPE`` — ``postgresql``, ``mysql`` (MySQL and MariaDB) or ``redis``.
- ``SAFEHOLD_DB_HOST`` — host name or address of the server (a Service name in a cluster).
- ``SAFEHOLD_DB_PORT`` — port; default 5432 / 3306 / 6379 by type.
- ``SAFEHOLD_DB_USER`` — user to connect as; default ``postgres`` / ``root`` / none (Redis
  ``default`` user).
- ``SAFEHOLD_DB_PASSWORD_FILE`` — file holding the password (trailing newline stripped).
- ``SAFEHOLD_DB_PASSWORD`` — the password itself; used only when no file is given.
- ``SAFEHOLD_DB_DATABASES`` — comma list of databases; empty = every user database (PostgreSQL:
  all but templates; MySQL: all but ``mysql``, ``sys``, ``information_schema``,
  ``performance_schema``). Ignored for Redis (the RDB holds every logical database).
- ``SAFEHOLD_DB_TLS_MODE`` — ``disable``, ``prefer`` (default), ``require``, ``verify-ca``,
  ``verify-full``; mapped to libpq's sslmode, MariaDB's ``--ssl*`` and redis-cli ``--tls``.
- ``SAFEHOLD_DB_TLS_CA_FILE`` — CA bundle that verifies the server certificate.
- ``SAFEHOLD_DB_CONNECT_TIMEOUT`` — seconds to wait for a connection (default 10).

Per-type options:

- ``SAFEHOLD_PG_MAINTENANCE_DB`` — database used to list databases and create restore targets
  (default ``postgres``).
- ``SAFEHOLD_PG_GLOBALS`` — ``true`` (default) dumps roles and tablespaces with
  ``pg_dumpall --globals-only``; ``false`` skips them.
- ``SAFEHOLD_PG_ROLE_PASSWORDS`` — ``true`` keeps role password hashes in the globals dump
  (needs superuser); default ``false`` (``--no-role-passwords``).
- ``SAFEHOLD_PG_RESTORE_JOBS`` — ``pg_restore -j``; above 1 the dump is first written to
  ``SAFEHOLD_SCRATCH_DIR`` (parallel restore needs a seekable file), default 1 = streamed.
- ``SAFEHOLD_PG_RESTORE_GLOBALS`` — ``true`` replays ``globals.sql`` before the databases
  (errors such as "role already exists" are reported as warnings); default ``false``.
- ``SAFEHOLD_MYSQL_DUMP_OPTIONS`` — extra ``mariadb-dump`` options (shell-quoted, no secrets).
- ``SAFEHOLD_MYSQL_ACCOUNTS`` — ``true`` also dumps user accounts and grants
  (``mariadb-dump --system=users``, MariaDB only) as ``mysql-system/users.sql``; default
  ``false``.
- ``SAFEHOLD_MYSQL_RESTORE_ACCOUNTS`` — ``true`` replays ``users.sql`` before the databases
  (``CREATE USER IF NOT EXISTS``; failing statements are warnings); default ``false``.

Restore only:

- ``SAFEHOLD_DB_FILES`` — the dumped files and their snapshots, as the operator recorded them in
  the backup: a JSON object ``{"postgresql/app.dump": {"snapshot": "<id>", "bytes": 123}}``.
  With it the mover reads the files at once, without listing the repository first; without it,
  ``SAFEHOLD_DB_SNAPSHOT`` and the tags say where to look.
- ``SAFEHOLD_DB_SNAPSHOT`` — restic snapshot id to read; when empty the newest snapshot tagged
  with this backup and target is used (one snapshot per dumped file, see docs/databases.md).
- ``SAFEHOLD_DB_MAPPING`` — comma list ``from:to`` renaming databases (``app:app_copy``); for
  Redis ``0:3`` maps logical database numbers.
- ``SAFEHOLD_DB_READY_TIMEOUT`` — seconds a restore waits for the target to accept connections
  with the given credentials before it starts (default 300; 0 = one attempt). Connection refused,
  unreachable or unresolvable hosts and servers still starting up are retried; when the time is up
  the run fails with ``TargetNotReady``. A rejected password fails at once
  (``AuthenticationFailed``).
- ``SAFEHOLD_DB_RESTORE_CLEAN`` — ``true`` restores over an existing database (PostgreSQL
  ``--clean --if-exists``, MySQL replays its ``DROP TABLE IF EXISTS``, Redis empties each
  logical database it writes into with ``FLUSHDB``); default ``false``: a database that
  already exists (for Redis: a logical database that holds keys, a function library of the
  same name) is refused with ``DatabaseExists``. Set from ``spec.databases.targets[].clean``.
- ``SAFEHOLD_SCRATCH_DIR`` — a writable (ideally memory-backed) directory for the few restore
  paths that need a file: parallel ``pg_restore`` and the Redis RDB. Default ``$TMPDIR``.

Drill checks (``db-verify``, ``db-drop``; also read by ``db-restore``):

- ``SAFEHOLD_DB_SCRATCH_SUFFIX`` — the drill's suffix (1-16 of ``[a-z0-9]``): the scratch
  databases are ``<db>_drill_<suffix>``; a Redis restore marks every logical database it
  writes with the key ``safehold.io/drill:<suffix>``. The movers drop or flush nothing else.
- ``SAFEHOLD_DB_VERIFY_COUNTS`` — ``true`` (default) compares the row counts of the scratch
  databases (named by ``SAFEHOLD_DB_MAPPING``, original:scratch) with those recorded at
  backup time (the counts file among ``SAFEHOLD_DB_FILES``).
- ``SAFEHOLD_DB_PROBES_FILE`` — JSON list of probes ``{name, database, original, query,
  expect}``, ``database`` being the scratch database (Redis: the logical database number).
- ``SAFEHOLD_DB_PROBE_TIMEOUT`` — seconds one probe may run (default 300).
- ``SAFEHOLD_DB_DROP`` — ``db-drop``: comma list of scratch names to drop (Redis:
  ``drill_<suffix>``, the logical databases holding that drill's marker are flushed).

Identity and repository (both verbs):

- ``SAFEHOLD_BACKUP`` — ``<namespace>/<name>`` of the Backup (snapshot tag
  ``safehold.io/backup=``).
- ``SAFEHOLD_TARGET`` — name of the database target in the policy (tag ``safehold.io/target=``).
- ``RESTIC_REPOSITORY``, ``RESTIC_PASSWORD``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_DEFAULT_REGION``, ``RESTIC_CACHE_DIR`` — the repository, as
  `storage.restic.mover_environment` produces them; ``SAFEHOLD_RESTIC_OPTIONS`` — further restic
  options, shell-quoted (``-o s3.bucket-lookup=path --cacert /etc/safehold/ca.crt``).
- ``SAFEHOLD_TERMINATION_LOG`` — where the result JSON is written besides stdout (default
  ``/dev/termination-log``; at most 4 KiB).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from safehold.api.errors import Failure

DB_TYPE = "SAFEHOLD_DB_TYPE"
DB_HOST = "SAFEHOLD_DB_HOST"
DB_PORT = "SAFEHOLD_DB_PORT"
DB_USER = "SAFEHOLD_DB_USER"
DB_PASSWORD_FILE = "SAFEHOLD_DB_PASSWORD_FILE"  # noqa: S105 - a variable name, not a secret
DB_PASSWORD = "SAFEHOLD_DB_PASSWORD"  # noqa: S105
DB_DATABASES = "SAFEHOLD_DB_DATABASES"
DB_TLS_MODE = "SAFEHOLD_DB_TLS_MODE"
DB_TLS_CA_FILE = "SAFEHOLD_DB_TLS_CA_FILE"
DB_CONNECT_TIMEOUT = "SAFEHOLD_DB_CONNECT_TIMEOUT"
DB_SNAPSHOT = "SAFEHOLD_DB_SNAPSHOT"
DB_FILES = "SAFEHOLD_DB_FILES"
DB_MAPPING = "SAFEHOLD_DB_MAPPING"
DB_RESTORE_CLEAN = "SAFEHOLD_DB_RESTORE_CLEAN"
DB_READY_TIMEOUT = "SAFEHOLD_DB_READY_TIMEOUT"
DEFAULT_READY_TIMEOUT = 300
DB_SCRATCH_SUFFIX = "SAFEHOLD_DB_SCRATCH_SUFFIX"
DB_VERIFY_COUNTS = "SAFEHOLD_DB_VERIFY_COUNTS"
DB_PROBES_FILE = "SAFEHOLD_DB_PROBES_FILE"
DB_PROBE_TIMEOUT = "SAFEHOLD_DB_PROBE_TIMEOUT"
DB_DROP = "SAFEHOLD_DB_DROP"
PG_MAINTENANCE_DB = "SAFEHOLD_PG_MAINTENANCE_DB"
PG_GLOBALS = "SAFEHOLD_PG_GLOBALS"
PG_ROLE_PASSWORDS = "SAFEHOLD_PG_ROLE_PASSWORDS"
PG_RESTORE_JOBS = "SAFEHOLD_PG_RESTORE_JOBS"
PG_RESTORE_GLOBALS = "SAFEHOLD_PG_RESTORE_GLOBALS"
MYSQL_DUMP_OPTIONS = "SAFEHOLD_MYSQL_DUMP_OPTIONS"
MYSQL_ACCOUNTS = "SAFEHOLD_MYSQL_ACCOUNTS"
MYSQL_RESTORE_ACCOUNTS = "SAFEHOLD_MYSQL_RESTORE_ACCOUNTS"
SCRATCH_DIR = "SAFEHOLD_SCRATCH_DIR"
BACKUP = "SAFEHOLD_BACKUP"
TARGET = "SAFEHOLD_TARGET"
TERMINATION_LOG = "SAFEHOLD_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# The volume verbs (safehold.movers.volume).
VOLUME_PATH = "SAFEHOLD_VOLUME_PATH"
PVC = "SAFEHOLD_PVC"
SNAPSHOT_ID = "SAFEHOLD_SNAPSHOT_ID"
SNAPSHOT_PATH = "SAFEHOLD_SNAPSHOT_PATH"
OVERWRITE = "SAFEHOLD_OVERWRITE"
# "true": restic reads every restored file back and compares it with the snapshot (drills).
VERIFY = "SAFEHOLD_VERIFY"
# Extra restic options (shell-quoted) of every verb, next to restic's own variables.
RESTIC_OPTIONS = "SAFEHOLD_RESTIC_OPTIONS"

DB_TYPES = ("postgresql", "mysql", "redis")
TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379}
DEFAULT_USERS = {"postgresql": "postgres", "mysql": "root", "redis": ""}

# Tags of every database snapshot.
TAG_BACKUP = "safehold.io/backup"
TAG_CONTENT = "safehold.io/content"
TAG_TARGET = "safehold.io/target"
TAG_DATABASE = "safehold.io/database"
CONTENT_DATABASE = "database"


class ConfigError(Failure):
    """The mover's environment is incomplete or invalid (reason InvalidMoverEnvironment)."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidMoverEnvironment", message)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def parse_mapping(raw: str) -> dict[str, str]:
    """`a:b,c:d` → {"a": "b", "c": "d"}."""
    mapping: dict[str, str] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        source, sep, dest = item.partition(":")
        if not sep or not source.strip() or not dest.strip() or ":" in dest:
            # Named after the RestoreRequest field the mapping comes from.
            raise ConfigError(
                f"databaseMapping: {item!r} is not FROM:TO (names with ',' or ':' cannot be mapped)"
            )
        mapping[source.strip()] = dest.strip()
    return mapping


_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")


def encode_files(files: Mapping[str, tuple[str, int]]) -> str:
    """{path: (snapshot id, bytes)} as the value of SAFEHOLD_DB_FILES."""
    return json.dumps(
        {path: {"snapshot": snap, "bytes": size} for path, (snap, size) in files.items()},
        separators=(",", ":"),
        sort_keys=True,
    )


def parse_files(raw: str) -> dict[str, tuple[str, int]]:
    """The value of SAFEHOLD_DB_FILES → {path: (snapshot id, bytes)}; empty when unset."""
    if not raw.strip():
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{DB_FILES} is not JSON") from None
    if not isinstance(decoded, dict) or not decoded:
        raise ConfigError(f"{DB_FILES} must be a non-empty JSON object of path to snapshot")
    files: dict[str, tuple[str, int]] = {}
    for path, item in decoded.items():
        snap = item.get("snapshot") if isinstance(item, dict) else None
        size = item.get("bytes", 0) if isinstance(item, dict) else None
        if not isinstance(snap, str) or not _SNAPSHOT_ID.match(snap):
            raise ConfigError(f"{DB_FILES}: {path!r} has no valid restic snapshot id")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"{DB_FILES}: {path!r} has an invalid size")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise ConfigError(f"{DB_FILES}: {path!r} is not a relative path")
        files[path] = (snap, size)
    return files


@dataclass(frozen=True)
class DbConfig:
    """Everything the database mover needs, read from the environment. Holds the password."""

    type: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    databases: tuple[str, ...]
    tls_mode: str
    tls_ca_file: str
    connect_timeout: int
    backup: str
    target: str
    pg_maintenance_db: str = "postgres"
    pg_globals: bool = True
    pg_role_passwords: bool = False
    pg_restore_jobs: int = 1
    pg_restore_globals: bool = False
    mysql_dump_options: tuple[str, ...] = ()
    mysql_accounts: bool = False
    mysql_restore_accounts: bool = False
    snapshot: str = ""
    files: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    mapping: Mapping[str, str] = field(default_factory=dict)
    restore_clean: bool = False
    ready_timeout: int = DEFAULT_READY_TIMEOUT
    scratch_dir: str = "/tmp"
    scratch_suffix: str = ""
    verify_counts: bool = True
    probes_file: str = ""
    probe_timeout: int = 300
    drop: tuple[str, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        return (
            f"{TAG_BACKUP}={self.backup}",
            f"{TAG_CONTENT}={CONTENT_DATABASE}",
            f"{TAG_TARGET}={self.target}",
        )

    def mapped(self, database: str) -> str:
        return self.mapping.get(database, database)


def _password(environ: Mapping[str, str]) -> str:
    path = environ.get(DB_PASSWORD_FILE, "").strip()
    if path:
        try:
            return Path(path).read_text().rstrip("\r\n")
        except OSError as err:
            raise ConfigError(f"{DB_PASSWORD_FILE}: cannot read {path}: {err.strerror}") from None
    return environ.get(DB_PASSWORD, "")


def from_environment(environ: Mapping[str, str] | None = None) -> DbConfig:
    env = os.environ if environ is None else environ
    db_type = env.get(DB_TYPE, "").strip().lower()
    if db_type in ("mariadb",):
        db_type = "mysql"
    if db_type not in DB_TYPES:
        raise ConfigError(f"{DB_TYPE} must be one of {', '.join(DB_TYPES)}, not {db_type!r}")
    host = env.get(DB_HOST, "").strip()
    if not host:
        raise ConfigError("the target names no host (host or service)")
    tls_mode = env.get(DB_TLS_MODE, "").strip().lower() or "prefer"
    if tls_mode not in TLS_MODES:
        raise ConfigError(f"{DB_TLS_MODE} must be one of {', '.join(TLS_MODES)}")
    backup = env.get(BACKUP, "").strip()
    if backup.count("/") != 1:
        raise ConfigError(f"{BACKUP} must be <namespace>/<name>, not {backup!r}")
    target = env.get(TARGET, "").strip()
    if not target or "," in target:
        raise ConfigError(f"{TARGET} must be a target name without commas")
    databases = tuple(d.strip() for d in env.get(DB_DATABASES, "").split(",") if d.strip())
    if any("," in d or "/" in d for d in databases):
        raise ConfigError("databases: database names must not contain ',' or '/'")
    return DbConfig(
        type=db_type,
        host=host,
        port=_int(env, DB_PORT, DEFAULT_PORTS[db_type]),
        user=env.get(DB_USER, "").strip() or DEFAULT_USERS[db_type],
        password=_password(env),
        databases=databases,
        tls_mode=tls_mode,
        tls_ca_file=env.get(DB_TLS_CA_FILE, "").strip(),
        connect_timeout=_int(env, DB_CONNECT_TIMEOUT, 10),
        backup=backup,
        target=target,
        pg_maintenance_db=env.get(PG_MAINTENANCE_DB, "").strip() or "postgres",
        pg_globals=_flag(env, PG_GLOBALS, True),
        pg_role_passwords=_flag(env, PG_ROLE_PASSWORDS, False),
        pg_restore_jobs=max(1, _int(env, PG_RESTORE_JOBS, 1)),
        pg_restore_globals=_flag(env, PG_RESTORE_GLOBALS, False),
        mysql_dump_options=tuple(shlex.split(env.get(MYSQL_DUMP_OPTIONS, ""))),
        mysql_accounts=_flag(env, MYSQL_ACCOUNTS, False),
        mysql_restore_accounts=_flag(env, MYSQL_RESTORE_ACCOUNTS, False),
        snapshot=env.get(DB_SNAPSHOT, "").strip(),
        files=parse_files(env.get(DB_FILES, "")),
        mapping=parse_mapping(env.get(DB_MAPPING, "")),
        restore_clean=_flag(env, DB_RESTORE_CLEAN, False),
        ready_timeout=max(0, _int(env, DB_READY_TIMEOUT, DEFAULT_READY_TIMEOUT)),
        scratch_dir=env.get(SCRATCH_DIR, "").strip() or env.get("TMPDIR", "") or "/tmp",
        scratch_suffix=_suffix(env),
        verify_counts=_flag(env, DB_VERIFY_COUNTS, True),
        probes_file=env.get(DB_PROBES_FILE, "").strip(),
        probe_timeout=max(1, _int(env, DB_PROBE_TIMEOUT, 300)),
        drop=tuple(n.strip() for n in env.get(DB_DROP, "").split(",") if n.strip()),
    )


_SUFFIX = re.compile(r"^[a-z0-9]{1,16}$")


def _suffix(env: Mapping[str, str]) -> str:
    """The drill's suffix (db-verify, db-drop, and a drill's db-restore)."""
    suffix = env.get(DB_SCRATCH_SUFFIX, "").strip()
    if suffix and not _SUFFIX.match(suffix):
        raise ConfigError(f"{DB_SCRATCH_SUFFIX} must be 1-16 of [a-z0-9], not {suffix!r}")
    return suffix
