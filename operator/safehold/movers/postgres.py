"""PostgreSQL: `pg_dump -Fc -Z0` per database and `pg_dumpall --globals-only`, `pg_restore` back.

Connection settings reach libpq through its environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT): no secret on any command line, and `-w` so a
tool never waits for a password prompt.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from safehold.contract import env as menv
from safehold.contract.result import (
    DATABASE_NOT_FOUND,
    DUMP_FAILED,
    RESTORE_FAILED,
    MoverError,
    Result,
)
from safehold.movers import dbtools
from safehold.planning import rowcounts
from safehold.storage import restic

PREFIX = "postgresql"
GLOBALS_FILE = f"{PREFIX}/globals.sql"

_AUTH = re.compile(
    r"password authentication failed|no password supplied|authentication failed|"
    # FATAL: the login role is unknown; a role the restored objects name is a RestoreFailed.
    r"pg_hba\.conf rejects|FATAL:\s+role \".*\" does not exist|permission denied to|"
    r"must be superuser"
)
_UNREACHABLE = re.compile(
    r"Connection refused|timeout expired|could not translate host name|No route to host|"
    r"Network is unreachable|Name or service not known|could not connect to server"
)
_NO_DATABASE = re.compile(r"database \".*\" does not exist")
_TLS = re.compile(
    r"certificate verify failed|does not match host name|root certificate file|"
    r"server does not support SSL|SSL error: (tlsv1 alert|sslv3 alert|wrong version)|"
    r"no pg_hba\.conf entry .* no encryption|could not (read|load) root certificate"
)
_STARTING = re.compile(
    r"the database system is (starting up|shutting down|in recovery mode|"
    r"not yet accepting connections)"
)


classify = dbtools.ErrorPatterns(
    auth=_AUTH,
    unreachable=_UNREACHABLE,
    no_database=_NO_DATABASE,
    starting=_STARTING,
    tls=_TLS,
    lost_mid_work="server closed the connection",
).classify


def libpq_env(cfg: menv.DbConfig, database: str | None = None) -> dict[str, str]:
    env = {
        "PGHOST": cfg.host,
        "PGPORT": str(cfg.port),
        "PGUSER": cfg.user,
        "PGSSLMODE": cfg.tls_mode,
        "PGCONNECT_TIMEOUT": str(cfg.connect_timeout),
        "PGAPPNAME": "safehold",
        "PGDATABASE": database or cfg.pg_maintenance_db,
    }
    if cfg.password:
        env["PGPASSWORD"] = cfg.password
    if cfg.tls_ca_file:
        env["PGSSLROOTCERT"] = cfg.tls_ca_file
    return env


def _bin(name: str) -> str:
    # Debian keeps the versioned tools in /usr/lib/postgresql/<major>/bin; PATH has wrappers.
    return dbtools.which(name)


def psql(cfg: menv.DbConfig, sql: str, *, database: str | None = None, **variables: str) -> str:
    """Run SQL (from stdin, so `:'var'` interpolation works) and return the unaligned output."""
    cmd = [_bin("psql"), "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    for key, value in variables.items():
        cmd += ["-v", f"{key}={value}"]
    proc = dbtools.run_tool(
        cmd,
        dbtools.base_env(libpq_env(cfg, database)),
        input_bytes=sql.encode(),
        timeout=cfg.connect_timeout + 60,
    )
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        raise MoverError(classify(text, "DatabaseError"), dbtools.tail(text))
    return proc.stdout.decode()


def probe(cfg: menv.DbConfig) -> tuple[str, list[str]]:
    """(server version, databases that accept connections, templates excluded)."""
    out = psql(
        cfg,
        "SHOW server_version;\n"
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1;\n",
    )
    lines = out.splitlines()
    return (lines[0].strip() if lines else ""), [ln for ln in lines[1:] if ln]


def dump(cfg: menv.DbConfig, repo: restic.Repository, result: Result) -> None:
    version, available = probe(cfg)
    result.serverVersion = version
    pg_dump = _bin("pg_dump")
    result.toolVersion = dbtools.tool_version(pg_dump)
    wanted = list(cfg.databases) or available
    missing = [d for d in wanted if d not in available]
    if missing:
        raise MoverError(DATABASE_NOT_FOUND, f"no such database: {', '.join(missing)}")
    # The globals are stored beside the databases (their own restic process): that hides one
    # restic start, most of what a small target's dump costs.
    side_result = Result(verb=result.verb)
    with dbtools.counts_store(cfg, repo, result) as store_counts:
        with ThreadPoolExecutor(1) as side:
            side_dump = (
                side.submit(_dump_globals, cfg, repo, side_result) if cfg.pg_globals else None
            )
            try:
                counted = [_dump_database(cfg, repo, result, name, pg_dump) for name in wanted]
            finally:
                # Merged also when a database failed, so that the run forgets its snapshot.
                failed = side_dump.exception() if side_dump is not None else None
                for item in side_result.databases:
                    result.add(item)
        if failed is not None:
            raise failed
        store_counts(rowcounts.RowCounts(PREFIX, tuple(counted)))


# Counts every table pg_dump dumps the data of (ordinary tables, partitions; not views,
# materialized views, foreign tables or an extension's own tables), one statement per table
# under its own savepoint, so that a table that cannot be read (row-level security, as for
# pg_dump) leaves the others counted. Run in the snapshot pg_dump reads.
COUNTED = "SAFEHOLD-COUNTED"
_COUNT_TABLES = r"""SET LOCAL row_security = off;
SET LOCAL lock_timeout = '5min';
\set ON_ERROR_STOP 0
SELECT 'SAVEPOINT safehold_count',
  format('SELECT json_build_array(%L, %L, count(*)) FROM %I.%I',
         n.nspname, c.relname, n.nspname, c.relname),
  'ROLLBACK TO SAVEPOINT safehold_count'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname \gexec
SELECT 'SAFEHOLD-COUNTED';
"""
_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")


def _session(cfg: menv.DbConfig, database: str) -> dbtools.Session:
    cmd = [_bin("psql"), "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    return dbtools.Session(cmd, dbtools.base_env(libpq_env(cfg, database)))


def _dump_database(
    cfg: menv.DbConfig, repo: restic.Repository, result: Result, name: str, pg_dump: str
) -> rowcounts.DatabaseCounts:
    """pg_dump of one database in a snapshot exported by a session of ours, which counts
    the rows of every table in that same snapshot while pg_dump runs: exact counts."""
    with _session(cfg, name) as session:
        session.send(_BEGIN + "SELECT pg_export_snapshot();\nSELECT 'SAFEHOLD-SNAPSHOT';\n")
        lines = session.read_until("SAFEHOLD-SNAPSHOT", timeout=cfg.connect_timeout + 60)
        if not lines or not _SNAPSHOT_ID.match(lines[-1]):
            session.close()
            text = session.errors() or "the snapshot was not exported"
            raise MoverError(classify(text, DUMP_FAILED), f"{name}: {dbtools.tail(text)}")
        session.send(_COUNT_TABLES)  # counts while pg_dump reads the same snapshot
        dbtools.store(
            cfg,
            repo,
            result,
            name,
            f"{PREFIX}/{dbtools.quote_name(name)}.dump",
            [pg_dump, "-w", "-Fc", "-Z0", f"--snapshot={lines[-1]}"],
            libpq_env(cfg, name),
            classify,
        )
        counted = session.read_until(COUNTED)
        session.close("COMMIT;\n")
        return _counts(name, counted, session.errors(), result)


def _counts(
    name: str, lines: list[str] | None, errors: str, result: Result
) -> rowcounts.DatabaseCounts:
    tables = parse_counted(lines or [])
    failed = [ln.split("ERROR:", 1)[1].strip() for ln in errors.splitlines() if "ERROR:" in ln]
    note = ""
    if lines is None:
        note = "the counting session ended early: " + dbtools.tail(errors, 1)
    elif failed:
        note = f"{len(failed)} tables could not be counted: {failed[0]}"
    if note:
        result.warnings.append(f"{name}: row counts incomplete: {note}")
    return rowcounts.DatabaseCounts(name, tuple(tables), exact=True, note=note[:500])


def parse_counted(lines: list[str]) -> list[rowcounts.TableCount]:
    """The output of _COUNT_TABLES: one JSON [schema, table, rows] per line."""
    tables = []
    for line in lines:
        schema, table, rows = json.loads(line)
        tables.append(rowcounts.TableCount(str(schema), str(table), int(rows)))
    return tables


def count_tables(cfg: menv.DbConfig, database: str) -> tuple[list[rowcounts.TableCount], str]:
    """Rows of every table of a (restored) database, counted as at dump time, and what
    could not be counted (the first error, empty when none)."""
    proc = dbtools.run_tool(
        [_bin("psql"), "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1"],
        dbtools.base_env(libpq_env(cfg, database)),
        input_bytes=(_BEGIN + _COUNT_TABLES + "COMMIT;\n").encode(),
        timeout=24 * 3600,
    )
    text = proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0 or COUNTED not in lines:
        raise MoverError(classify(text, "DatabaseError"), f"{database}: {dbtools.tail(text)}")
    failed = [ln.split("ERROR:", 1)[1].strip() for ln in text.splitlines() if "ERROR:" in ln]
    return parse_counted(lines[: lines.index(COUNTED)]), (failed[0] if failed else "")


def _dump_globals(cfg: menv.DbConfig, repo: restic.Repository, result: Result) -> None:
    cmd = [_bin("pg_dumpall"), "-w", "--globals-only", "-l", cfg.pg_maintenance_db]
    if not cfg.pg_role_passwords:
        cmd.append("--no-role-passwords")
    dbtools.store(cfg, repo, result, "globals", GLOBALS_FILE, cmd, libpq_env(cfg), classify)


def _conninfo(database: str) -> str:
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def _exists(cfg: menv.DbConfig, database: str) -> bool:
    out = psql(cfg, "SELECT 1 FROM pg_database WHERE datname = :'name';\n", name=database)
    return out.strip() == "1"


def restore(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    files: dict[str, dict[str, Any]],
    probed: tuple[str, list[str]],
) -> None:
    available = {
        dbtools.unquote_name(f[len(PREFIX) + 1 : -len(".dump")]): f
        for f in files
        if f.startswith(PREFIX + "/") and f.endswith(".dump")
    }
    names = dbtools.selected(cfg, sorted(available))
    readers: dict[str, restic.FileDump] = {}
    try:
        if names and cfg.pg_restore_jobs == 1:
            # The first database's bytes are on their way while the target is checked.
            readers[names[0]] = _reader(repo, files, available[names[0]])
        result.serverVersion = probed[0]
        result.toolVersion = dbtools.tool_version(_bin("pg_restore"))
        targets = {name: cfg.mapped(name) for name in names}
        existing = {t for t in targets.values() if _exists(cfg, t)}
        dbtools.refuse_existing(cfg, existing)
        if cfg.pg_restore_globals and GLOBALS_FILE in files:
            _restore_globals(cfg, repo, result, files[GLOBALS_FILE])
        for name in names:
            if cfg.pg_restore_jobs == 1 and name not in readers:
                readers[name] = _reader(repo, files, available[name])
            _restore_one(
                cfg,
                repo,
                result,
                name,
                targets[name],
                existing,
                available,
                files,
                readers.get(name),
            )
    finally:
        for reader in readers.values():
            reader.cancel()


def _reader(
    repo: restic.Repository, files: dict[str, dict[str, Any]], path: str
) -> restic.FileDump:
    return restic.FileDump(repo, str(files[path]["id"]), "/" + path)


def _restore_one(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    name: str,
    target: str,
    existing: set[str],
    available: dict[str, str],
    files: dict[str, dict[str, Any]],
    reader: restic.FileDump | None,
) -> None:
    """Restore one database (streamed from `reader`, else through a scratch file for
    parallel jobs); a database this run creates also gets the dumped one's owner, comment,
    settings and privileges (what `pg_restore --create` would have set)."""
    started = time.monotonic()
    filename = available[name]
    snap = files[filename]
    created = target not in existing
    if created:
        psql(cfg, 'CREATE DATABASE :"name" TEMPLATE template0;\n', name=target)
    cmd = [_bin("pg_restore"), "-w", "--exit-on-error", "-d", _conninfo(target)]
    if not created:
        cmd += ["--clean", "--if-exists"]
    env = dbtools.base_env(libpq_env(cfg, target))
    properties: list[str] = []
    try:
        if reader is None:
            properties = _restore_parallel(cfg, repo, snap, filename, cmd, env, created, target)
        else:
            if created:
                # The table of contents heads the archive: read on the way, no second restic.
                script = reader.peek_into(_properties_command(), command_env=dbtools.base_env())
                if script is None:
                    result.warnings.append(
                        f"{target}: the dumped database's owner, settings and privileges were"
                        " not read (its table of contents is larger than 64 MiB)"
                    )
                properties = _properties(script, target)
            proc = reader.into([*cmd, "--single-transaction"], command_env=env)
            if proc.returncode != 0:
                text = proc.stderr.decode(errors="replace")
                raise MoverError(classify(text, RESTORE_FAILED), f"{name}: {dbtools.tail(text)}")
    except (MoverError, restic.ResticError) as err:
        if not created:
            raise
        # What this run created and could not fill goes again; nothing else is touched.
        drop = functools.partial(psql, cfg, 'DROP DATABASE IF EXISTS :"name";\n', name=target)
        raise MoverError(err.reason, f"{err}{dbtools.drop_created(drop, target)}") from None
    _apply_properties(cfg, result, target, properties)
    dbtools.restored(result, name, target, filename, snap, time.monotonic() - started)


def _restore_parallel(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    snap: dict[str, object],
    filename: str,
    cmd: list[str],
    env: dict[str, str],
    created: bool,
    target: str,
) -> list[str]:
    """pg_restore -j needs to seek in the archive: one file in the scratch dir, removed
    after. Returns the database's properties read from it (when `created`)."""
    with tempfile.TemporaryDirectory(dir=cfg.scratch_dir, prefix="safehold-pg-") as tmp:
        path = Path(tmp) / "archive.dump"
        with path.open("wb") as fh:
            restic.dump_file(repo, str(snap["id"]), "/" + filename, fh)
        proc = dbtools.run_tool(
            [*cmd, "-j", str(cfg.pg_restore_jobs), str(path)], env, timeout=24 * 3600
        )
        script = (
            dbtools.run_tool([*_properties_command(), str(path)], dbtools.base_env(), timeout=600)
            if created and proc.returncode == 0
            else None
        )
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        raise MoverError(classify(text, RESTORE_FAILED), f"{filename}: {dbtools.tail(text)}")
    return _properties(script, target)


def _restore_globals(
    cfg: menv.DbConfig, repo: restic.Repository, result: Result, snap: dict[str, object]
) -> None:
    """Replay roles and tablespaces; statements that fail (a role that exists) are warnings."""
    cmd = [_bin("psql"), "-X", "-w", "-q", "-f", "-"]
    env = dbtools.base_env(libpq_env(cfg))
    dbtools.replay_script(repo, snap, GLOBALS_FILE, cmd, env, classify, "globals", result)


# Statements of a `pg_restore --create` script about the database itself. pg_restore applies
# them only with --create (which would recreate the original name); a restore into a database
# we created applies them to that database instead.
_CREATE = re.compile(r"^CREATE DATABASE (.+?) WITH ")
_PROPERTY = (
    "ALTER DATABASE {db} OWNER TO ",
    "ALTER DATABASE {db} SET ",
    "COMMENT ON DATABASE {db} IS ",
    " IN DATABASE {db} SET ",
    " ON DATABASE {db} TO ",
    " ON DATABASE {db} FROM ",
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _properties_command() -> list[str]:
    """pg_restore printing the archive's pre-data script with the CREATE DATABASE part: it
    reads only the table of contents at the archive's head."""
    return [_bin("pg_restore"), "--create", "--section=pre-data", "-f", "-"]


def _properties(script: subprocess.CompletedProcess[bytes] | None, target: str) -> list[str]:
    """Owner, comment, settings and privileges of the dumped database, from the output of
    `_properties_command`, as statements about `target`; none when it could not be read."""
    if script is None or script.returncode != 0:
        return []
    return properties_for(script.stdout.decode(errors="replace"), target)


def properties_for(script: str, target: str) -> list[str]:
    """The statements of a `pg_restore --create` script about the database itself, rewritten
    to name `target`."""
    lines = script.splitlines()
    original = next((m.group(1) for m in map(_CREATE.match, lines) if m), None)
    if original is None:
        return []
    wanted = [p.format(db=original) for p in _PROPERTY]
    return [
        line.replace(f"DATABASE {original} ", f"DATABASE {_quote(target)} ", 1)
        for line in lines
        if line.endswith(";") and any(w in line for w in wanted)
    ]


def _apply_properties(
    cfg: menv.DbConfig, result: Result, target: str, statements: list[str]
) -> None:
    """Apply them one by one; one that fails (a role missing on this server) is a warning."""
    if not statements:
        return
    proc = dbtools.run_tool(
        [_bin("psql"), "-X", "-w", "-q", "-f", "-"],
        dbtools.base_env(libpq_env(cfg)),
        input_bytes="\n".join(statements).encode() + b"\n",
        timeout=cfg.connect_timeout + 60,
    )
    errors = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if "ERROR" in ln]
    result.warnings += [f"{target}: {ln.split('ERROR:', 1)[-1].strip()}" for ln in errors[:5]]
