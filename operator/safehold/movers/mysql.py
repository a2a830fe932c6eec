"""MySQL and MariaDB: `mariadb-dump` (or `mysqldump`) per database, replayed with `mariadb`.

Each database is dumped on its own, without `--databases`, so the dump holds no `CREATE
DATABASE`/`USE` and can be replayed into any database name. `--single-transaction` gives a
consistent snapshot of InnoDB tables without locking them; routines, triggers and events are
included. The password reaches the tools through `MYSQL_PWD`, never the command line.
"""

from __future__ import annotations

import functools
import re
import time
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
from safehold.movers import mysql_accounts as accounts
from safehold.planning import rowcounts
from safehold.storage import restic

PREFIX = "mysql"
ACCOUNTS_FILE = "mysql-system/users.sql"  # outside mysql/: no database name can collide
SYSTEM_DATABASES = {"mysql", "sys", "information_schema", "performance_schema"}

_AUTH = re.compile(r"ERROR 1045|ERROR 1044|Access denied|ERROR 1698")
_UNREACHABLE = re.compile(
    r"ERROR 200[2359]|Can't connect|Unknown (MySQL|MariaDB) server host|Got timeout"
)
_NO_DATABASE = re.compile(r"ERROR 1049|Unknown database")
_TLS = re.compile(r"ERROR 2026|SSL connection error|TLS/SSL error|SSL is required")
_STARTING = re.compile(
    r"ERROR 2013 .*(handshake|initial communication packet)|ERROR 1053|"
    r"Server shutdown in progress"
)


classify = dbtools.ErrorPatterns(
    auth=_AUTH,
    unreachable=_UNREACHABLE,
    no_database=_NO_DATABASE,
    starting=_STARTING,
    tls=_TLS,
    lost_mid_work="during query",
).classify


def _client() -> str:
    return dbtools.which("mariadb", "mysql")


def _dumper() -> str:
    return dbtools.which("mariadb-dump", "mysqldump")


def connection_args(cfg: menv.DbConfig, *, client: bool = True) -> list[str]:
    args = [f"--host={cfg.host}", f"--port={cfg.port}", f"--user={cfg.user}", "--protocol=TCP"]
    if client:  # mariadb-dump has no such option
        args.append(f"--connect-timeout={cfg.connect_timeout}")
    if cfg.tls_mode == "disable":
        args.append("--skip-ssl")
    elif cfg.tls_mode != "prefer":
        args.append("--ssl")
        if cfg.tls_mode in ("verify-ca", "verify-full"):
            args.append("--ssl-verify-server-cert")
    if cfg.tls_ca_file:
        args.append(f"--ssl-ca={cfg.tls_ca_file}")
    return args


def tool_env(cfg: menv.DbConfig) -> dict[str, str]:
    return {"MYSQL_PWD": cfg.password} if cfg.password else {}


def sql(cfg: menv.DbConfig, statements: str, *, database: str = "") -> str:
    """Run statements (from stdin) and return the tab-separated output without headers."""
    cmd = [_client(), "--no-defaults", *connection_args(cfg), "--batch", "--skip-column-names"]
    if database:
        cmd.append(f"--database={database}")
    proc = dbtools.run_tool(
        cmd,
        dbtools.base_env(tool_env(cfg)),
        input_bytes=statements.encode(),
        timeout=cfg.connect_timeout + 60,
    )
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        raise MoverError(classify(text, "DatabaseError"), dbtools.tail(text))
    return proc.stdout.decode()


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identifier(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def probe(cfg: menv.DbConfig) -> tuple[str, list[str]]:
    out = sql(cfg, "SELECT VERSION();\nSHOW DATABASES;\n")
    lines = out.splitlines()
    dbs = [ln for ln in lines[1:] if ln and ln not in SYSTEM_DATABASES]
    return (lines[0].strip() if lines else ""), dbs


def dump(cfg: menv.DbConfig, repo: restic.Repository, result: Result) -> None:
    version, available = probe(cfg)
    result.serverVersion = version
    dumper = _dumper()
    result.toolVersion = dbtools.tool_version(dumper)
    wanted = list(cfg.databases) or available
    missing = [d for d in wanted if d not in available and d not in SYSTEM_DATABASES]
    if missing:
        raise MoverError(DATABASE_NOT_FOUND, f"no such database: {', '.join(missing)}")
    with dbtools.counts_store(cfg, repo, result) as store_counts:
        counted = [
            _dump_database(cfg, repo, result, n, _dump_command(cfg, dumper, n)) for n in wanted
        ]
        if cfg.mysql_accounts:
            # CREATE USER IF NOT EXISTS + GRANT for every account (password hashes included).
            cmd = [
                dumper,
                "--no-defaults",
                *connection_args(cfg, client=False),
                "--system=users",
                "--insert-ignore",
            ]
            dbtools.store(
                cfg, repo, result, "accounts", ACCOUNTS_FILE, cmd, tool_env(cfg), classify
            )
        store_counts(rowcounts.RowCounts(PREFIX, tuple(counted)))


def _dump_command(cfg: menv.DbConfig, dumper: str, name: str) -> list[str]:
    return [
        dumper,
        "--no-defaults",
        *connection_args(cfg, client=False),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        *cfg.mysql_dump_options,
        "--",
        name,
    ]


# Row counts. mariadb-dump --single-transaction reads its own consistent snapshot, which no
# other session can share; ours is opened just before it. Both see the same data when no
# write committed in between: InnoDB's transaction counter (Innodb_max_trx_id, which every
# write transaction and every commit advances) read before our snapshot and again after the
# dump ended tells. Only then, and only for InnoDB tables, are the counts exact.
COUNTER = "Innodb_max_trx_id"
_OPEN = f"""SHOW GLOBAL STATUS LIKE '{COUNTER}';
SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;
START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;
SELECT 'SAFEHOLD-OPENED';
"""
_AFTER = f"SHOW GLOBAL STATUS LIKE '{COUNTER}';\nSELECT 'SAFEHOLD-AFTER';\n"


def _session(cfg: menv.DbConfig) -> dbtools.Session:
    cmd = [_client(), "--no-defaults", *connection_args(cfg), "--batch", "--skip-column-names"]
    cmd.append("--default-character-set=utf8mb4")
    # --unbuffered: an answer per statement; --force: a table that cannot be counted does
    # not end the session.
    return dbtools.Session([*cmd, "--unbuffered", "--force"], dbtools.base_env(tool_env(cfg)))


def _counter(lines: list[str] | None) -> str | None:
    found = [ln.split("\t", 1)[1] for ln in lines or [] if ln.startswith(COUNTER + "\t")]
    return found[0] if found else None


def tables_sql(database: str) -> str:
    """Base tables of a database and their engines, names hex-encoded (no escaping issue)."""
    return (
        "SELECT HEX(TABLE_NAME), ENGINE FROM information_schema.TABLES"  # noqa: S608 - literal()
        f" WHERE TABLE_SCHEMA = {literal(database)} AND TABLE_TYPE = 'BASE TABLE'"
        " ORDER BY TABLE_NAME;\nSELECT 'SAFEHOLD-LISTED';\n"
    )


def count_sql(database: str, tables: list[str]) -> str:
    """One COUNT(*) per table, each answer naming its table (hex)."""
    rows = [
        f"SELECT HEX({literal(t)}), COUNT(*) FROM {identifier(database)}.{identifier(t)};"  # noqa: S608
        for t in tables
    ]
    return "\n".join([*rows, "SELECT 'SAFEHOLD-COUNTED';", ""])


def parse_counted(lines: list[str] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines or []:
        name, _, rows = line.partition("\t")
        counts[bytes.fromhex(name).decode(errors="replace")] = int(rows)
    return counts


def parse_tables(lines: list[str] | None) -> dict[str, str]:
    """table → engine, from tables_sql's answer."""
    tables: dict[str, str] = {}
    for line in lines or []:
        name, _, engine = line.partition("\t")
        tables[bytes.fromhex(name).decode(errors="replace")] = engine
    return tables


def _dump_database(
    cfg: menv.DbConfig, repo: restic.Repository, result: Result, name: str, cmd: list[str]
) -> rowcounts.DatabaseCounts:
    with _session(cfg) as session:
        session.send(_OPEN + tables_sql(name))
        opened = session.read_until("SAFEHOLD-OPENED", timeout=cfg.connect_timeout + 60)
        if opened is None:
            session.close()
            text = session.errors() or "the counting session did not start"
            raise MoverError(classify(text, DUMP_FAILED), f"{name}: {dbtools.tail(text)}")
        tables = parse_tables(session.read_until("SAFEHOLD-LISTED", timeout=600))
        session.send(count_sql(name, sorted(tables)))  # counted while the dump runs
        filename = f"{PREFIX}/{dbtools.quote_name(name)}.sql"
        dbtools.store(cfg, repo, result, name, filename, cmd, tool_env(cfg), classify)
        counted = parse_counted(session.read_until("SAFEHOLD-COUNTED"))
        session.send(_AFTER)
        after = _counter(session.read_until("SAFEHOLD-AFTER", timeout=cfg.connect_timeout + 60))
        session.close("COMMIT;\n")
    return _counts(name, tables, counted, _counter(opened), after, session.errors(), result)


def _counts(
    name: str,
    tables: dict[str, str],
    counted: dict[str, int],
    before: str | None,
    after: str | None,
    errors: str,
    result: Result,
) -> rowcounts.DatabaseCounts:
    exact = before is not None and before == after
    note = ""
    if before is None or after is None:
        note = f"the server does not report {COUNTER}: counted in a snapshot of its own"
    elif not exact:
        note = "writes committed while the dump ran: counted in a snapshot of its own"
    missing = sorted(set(tables) - set(counted))
    if missing:
        failed = [ln for ln in errors.splitlines() if ln.startswith("ERROR")]
        result.warnings.append(
            f"{name}: row counts of {len(missing)} tables not recorded"
            + (f": {failed[0]}" if failed else "")
        )
    entries = tuple(
        rowcounts.TableCount("", t, counted[t], exact and tables[t] == "InnoDB")
        for t in sorted(counted)
        if t in tables
    )
    return rowcounts.DatabaseCounts(name, entries, exact=exact, note=note)


def count_tables(cfg: menv.DbConfig, database: str) -> tuple[list[rowcounts.TableCount], str]:
    """Rows of every base table of a (restored) database, and the first error if any."""
    listed = sql(cfg, tables_sql(database)).splitlines()
    tables = parse_tables(listed[: listed.index("SAFEHOLD-LISTED")])
    cmd = [_client(), "--no-defaults", *connection_args(cfg), "--batch", "--skip-column-names"]
    proc = dbtools.run_tool(
        [*cmd, "--force"],
        dbtools.base_env(tool_env(cfg)),
        input_bytes=count_sql(database, sorted(tables)).encode(),
        timeout=24 * 3600,
    )
    lines = proc.stdout.decode(errors="replace").splitlines()
    if "SAFEHOLD-COUNTED" not in lines:
        text = proc.stderr.decode(errors="replace")
        raise MoverError(classify(text, "DatabaseError"), f"{database}: {dbtools.tail(text)}")
    counted = parse_counted(lines[: lines.index("SAFEHOLD-COUNTED")])
    errors = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if "ERROR" in ln]
    found = [rowcounts.TableCount("", t, n) for t, n in sorted(counted.items())]
    return found, (errors[0] if errors else "")


def restore(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    files: dict[str, dict[str, Any]],
    probed: tuple[str, list[str]],
) -> None:
    result.serverVersion, available_now = probed
    client = _client()
    result.toolVersion = dbtools.tool_version(client)
    stored = {
        dbtools.unquote_name(f[len(PREFIX) + 1 : -len(".sql")]): f
        for f in files
        if f.startswith(PREFIX + "/") and f.endswith(".sql")
    }
    names = dbtools.selected(cfg, sorted(stored))
    targets = {name: cfg.mapped(name) for name in names}
    existing = {t for t in targets.values() if t in available_now}
    dbtools.refuse_existing(cfg, existing)
    replay = None
    if cfg.mysql_restore_accounts and ACCOUNTS_FILE in files:
        replay = _replay_accounts(cfg, repo, files[ACCOUNTS_FILE])
    try:
        _restore_databases(cfg, repo, result, files, stored, targets, existing)
    except Exception:
        if replay is not None:
            result.warnings += accounts.warnings(replay)
        raise
    if replay is not None:
        # Grants on tables and routines can only be given once those exist.
        accounts.retry_failed(replay, functools.partial(_run_force, cfg))
        result.warnings += accounts.warnings(replay)


def _restore_databases(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    files: dict[str, dict[str, Any]],
    stored: dict[str, str],
    targets: dict[str, str],
    existing: set[str],
) -> None:
    client = _client()
    for name, target in targets.items():
        started = time.monotonic()
        sql(
            cfg,
            f"CREATE DATABASE IF NOT EXISTS {identifier(target)}"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n",
        )
        filename = stored[name]
        snap = files[filename]
        cmd = [
            client,
            "--no-defaults",
            *connection_args(cfg),
            "--default-character-set=utf8mb4",
            "--binary-mode",
            f"--database={target}",
        ]
        try:
            proc = restic.dump_into_command(
                repo,
                str(snap["id"]),
                "/" + filename,
                cmd,
                command_env=dbtools.base_env(tool_env(cfg)),
            )
            if proc.returncode != 0:
                text = proc.stderr.decode(errors="replace")
                raise MoverError(classify(text, RESTORE_FAILED), f"{name}: {dbtools.tail(text)}")
        except (MoverError, restic.ResticError) as err:
            if target in existing:
                raise
            # What this run created and could not fill goes again; nothing else is touched.
            drop = f"DROP DATABASE IF EXISTS {identifier(target)};\n"
            dropped = dbtools.drop_created(functools.partial(sql, cfg, drop), target)
            raise MoverError(err.reason, f"{err}{dropped}") from None
        dbtools.restored(result, name, target, filename, snap, time.monotonic() - started)


def _run_force(cfg: menv.DbConfig, script: str) -> tuple[int, str]:
    """Run a script statement by statement, going on after a failing one."""
    cmd = [_client(), "--no-defaults", *connection_args(cfg), "--force", "--binary-mode"]
    proc = dbtools.run_tool(
        cmd, dbtools.base_env(tool_env(cfg)), input_bytes=script.encode(), timeout=600
    )
    return proc.returncode, proc.stderr.decode(errors="replace")


def _replay_accounts(
    cfg: menv.DbConfig, repo: restic.Repository, snap: dict[str, Any]
) -> accounts.Replay:
    """Replay the accounts the target does not have yet; what fails is retried later."""
    script = accounts.read_script(cfg, repo, str(snap["id"]), ACCOUNTS_FILE)
    rows = sql(cfg, "SELECT User, Host FROM mysql.user;\n").splitlines()
    existing = [(u, h) for u, _, h in (row.partition("\t") for row in rows)]
    replay = accounts.plan(script, existing, cfg.user)
    accounts.run(replay, replay.statements, functools.partial(_run_force, cfg))
    return replay
