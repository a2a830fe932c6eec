"""Database targets of a backup or restore: one `safehold mover db-dump|db-restore` Job each.

The Job fills the environment contract of `safehold.movers.env`; the database password travels
only in the Job's Secret. A failing target does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from safehold.api.backup import DatabaseResult, DumpedFile
from safehold.api.content import DatabaseTarget, DatabaseTls
from safehold.api.restore import DatabaseRestoreTarget
from safehold.engine.volumes import MoverContext
from safehold.kube.jobs import FILES_DIR, LABEL_BACKUP, MoverSpec, run_mover
from safehold.kube.rest import ApiError
from safehold.kube.secrets import SecretProblem, read_secret_key
from safehold.movers import env as menv
from safehold.planning.durations import parse_duration
from safehold.planning.volumes import object_name
from safehold.storage import restic

JSON = dict[str, Any]
PARALLELISM = 2
SCRATCH = "/tmp"
DB_CA_KEY = "db-ca.crt"  # key of the mover Secret holding the database server's CA


def _flag(value: bool) -> str:
    return "true" if value else "false"


def target_environment(target: DatabaseTarget, namespace: str) -> dict[str, str]:
    """Plain (non-secret) environment of a dump of `target` (pure)."""
    host = target.host
    if host is None and target.service is not None:
        host = f"{target.service.name}.{target.service.namespace or namespace}.svc"
    env = {
        menv.DB_TYPE: target.type,
        menv.DB_HOST: host or "",
        menv.TARGET: target.name,
        menv.SCRATCH_DIR: SCRATCH,
    }
    if target.port:
        env[menv.DB_PORT] = str(target.port)
    if target.databases:
        env[menv.DB_DATABASES] = ",".join(target.databases)
    env |= tls_environment(target.tls)
    if target.postgresql is not None:
        env[menv.PG_GLOBALS] = _flag(target.postgresql.include_globals)
        env[menv.PG_ROLE_PASSWORDS] = _flag(target.postgresql.globals_with_passwords)
    if target.mysql is not None:
        skips = [
            f"--skip-{name}"
            for name in ("routines", "events", "triggers")
            if not getattr(target.mysql, name)
        ]
        if skips:
            env[menv.MYSQL_DUMP_OPTIONS] = " ".join(skips)
        if target.mysql.include_accounts:
            env[menv.MYSQL_ACCOUNTS] = "true"
    return env


def _credentials(
    ctx: MoverContext,
    namespace: str,
    secret: str | None,
    user_key: str = "username",
    password_key: str = "password",  # noqa: S107 - the name of a Secret key
) -> tuple[str, str]:
    if secret is None:
        return "", ""
    user = read_secret_key(ctx.location_core, namespace, secret, user_key)
    password = read_secret_key(ctx.location_core, namespace, secret, password_key)
    return user, password


def tls_environment(tls: DatabaseTls | None) -> dict[str, str]:
    """The mover's TLS variables for these settings (pure); none: the mover's default."""
    if tls is None:
        return {}
    env: dict[str, str] = {menv.DB_TLS_MODE: tls.mode}
    if tls.ca_secret:
        env[menv.DB_TLS_CA_FILE] = f"{FILES_DIR}/{DB_CA_KEY}"
    return env


def _tls_files(ctx: MoverContext, namespace: str, tls: DatabaseTls | None) -> dict[str, str]:
    """The CA of these TLS settings, for the mover Secret (mounted as a file)."""
    if tls is None or not tls.ca_secret:
        return {}
    return {DB_CA_KEY: read_secret_key(ctx.location_core, namespace, tls.ca_secret, "ca.crt")}


def _run(
    ctx: MoverContext,
    verb: str,
    namespace: str,
    name: str,
    env: dict[str, str],
    user: str,
    password: str,
    files: dict[str, str],
    timeout: str = "6h",
) -> JSON:
    data, options = ctx.secret_data()
    if password:
        data[menv.DB_PASSWORD] = password
    data |= files
    spec = MoverSpec(
        name=name,
        namespace=namespace,
        verb=verb,
        env={
            **env,
            menv.BACKUP: ctx.run,
            restic.OPTIONS_ENV: options,
            **({menv.DB_USER: user} if user else {}),
        },
        secret_name=name,
        secret_keys=[k for k in data if k != "ca.crt" and k not in files],
        labels={LABEL_BACKUP: ctx.run_label},
        deadline_seconds=int(parse_duration(timeout).total_seconds()),
        has_ca="ca.crt" in data,
        file_keys=sorted(files),
    )
    outcome = run_mover(ctx.rest, spec, data)
    if not outcome.ok:
        raise _TargetFailed(outcome.reason, outcome.message)
    return outcome.result


class _TargetFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _failed(target: str, type_: str, message: str, started: float | None = None) -> DatabaseResult:
    """A target that failed; with `started`, how long it ran before it did."""
    seconds = None if started is None else round(time.monotonic() - started, 3)
    return DatabaseResult(
        target=target, type=type_, result="Failed", message=message, duration_seconds=seconds
    )


# The mover switch that replays a target's stored accounts, by engine.
ACCOUNTS_SWITCH = {"postgresql": menv.PG_RESTORE_GLOBALS, "mysql": menv.MYSQL_RESTORE_ACCOUNTS}


def _result(target: str, type_: str, started: float, moved: JSON) -> DatabaseResult:
    dbs = moved.get("databases") or []
    snapshots = [str(d["snapshot"]) for d in dbs if d.get("snapshot")]
    return DatabaseResult(
        target=target,
        type=type_,
        result="Succeeded",
        # PostgreSQL's globals and MySQL's accounts are files of the target, not databases.
        databases=[
            str(d["name"])
            for d in dbs
            if d.get("name")
            and not str(d.get("file", "")).endswith("globals.sql")
            and not str(d.get("file", "")).startswith("mysql-system/")
        ],
        snapshot_id=snapshots[0] if snapshots else None,
        snapshots=snapshots,
        files=[
            DumpedFile(
                path=str(d["file"]),
                snapshot=str(d["snapshot"]),
                bytes=d.get("bytesProcessed"),
            )
            for d in dbs
            if d.get("file") and d.get("snapshot")
        ],
        bytes=moved.get("bytesProcessed"),
        server_version=moved.get("serverVersion"),
        tool_version=moved.get("toolVersion"),
        duration_seconds=round(time.monotonic() - started, 3),
    )


def dump_target(ctx: MoverContext, namespace: str, target: DatabaseTarget) -> DatabaseResult:
    started = time.monotonic()
    try:
        creds = target.credentials_secret
        user, password = (
            _credentials(ctx, namespace, creds.name, creds.username_key, creds.password_key)
            if creds
            else ("", "")
        )
        name = object_name("safehold", ctx.run_label, target.name, "db")
        env = target_environment(target, namespace)
        files = _tls_files(ctx, namespace, target.tls)
        moved = _run(ctx, "db-dump", namespace, name, env, user, password, files)
        return _result(target.name, target.type, started, moved)
    except (_TargetFailed, SecretProblem) as err:
        return _failed(target.name, target.type, f"{err.reason}: {err}", started)
    except ApiError as err:
        return _failed(target.name, target.type, f"{err.reason}: {err.message}")


def dump_targets(
    ctx: MoverContext, namespace: str, targets: Sequence[DatabaseTarget]
) -> list[DatabaseResult]:
    with ThreadPoolExecutor(max_workers=PARALLELISM) as pool:
        return list(pool.map(lambda t: dump_target(ctx, namespace, t), targets))


def restore_target(
    ctx: MoverContext,
    namespace: str,
    dumped: DatabaseResult,
    original: DatabaseTarget | None,
    override: DatabaseRestoreTarget | None,
    ready_timeout: str = "5m",
) -> DatabaseResult:
    """Restore one dumped target into its original server or the override's; the mover
    first waits up to `ready_timeout` for the server to accept connections."""
    started = time.monotonic()
    try:
        if original is None and (override is None or override.host is None):
            raise _TargetFailed(
                "TargetUnknown",
                "the backup does not say where this target "
                "lives; name a host in spec.databases.targets",
            )
        env = (
            target_environment(original, namespace)
            if original
            else {menv.DB_TYPE: dumped.type, menv.TARGET: dumped.target, menv.SCRATCH_DIR: SCRATCH}
        )
        user, password = "", ""
        if original is not None and original.credentials_secret is not None:
            c = original.credentials_secret
            user, password = _credentials(ctx, namespace, c.name, c.username_key, c.password_key)
        if override is not None:
            if override.host:
                env[menv.DB_HOST] = override.host
            if override.port:
                env[menv.DB_PORT] = str(override.port)
            if override.credentials_secret:
                user, password = _credentials(ctx, namespace, override.credentials_secret)
            if override.database_mapping:
                env[menv.DB_MAPPING] = ",".join(
                    f"{a}:{b}" for a, b in sorted(override.database_mapping.items())
                )
            if override.clean:
                env[menv.DB_RESTORE_CLEAN] = "true"
            if override.restore_accounts and dumped.type in ACCOUNTS_SWITCH:
                env[ACCOUNTS_SWITCH[dumped.type]] = "true"
        env.pop(menv.DB_DATABASES, None)
        env[menv.DB_READY_TIMEOUT] = str(int(parse_duration(ready_timeout).total_seconds()))
        if dumped.files:
            env[menv.DB_FILES] = menv.encode_files(
                {f.path: (f.snapshot, f.bytes or 0) for f in dumped.files}
            )
        elif dumped.snapshots:
            env[menv.DB_SNAPSHOT] = ",".join(dumped.snapshots)
        name = object_name("safehold", ctx.run_label, dumped.target, "dbr")
        # The override's TLS settings replace the original's (a restore into another server).
        tls = override.tls if override is not None and override.tls is not None else None
        if tls is None and original is not None:
            tls = original.tls
        for key in (menv.DB_TLS_MODE, menv.DB_TLS_CA_FILE):
            env.pop(key, None)
        env |= tls_environment(tls)
        files = _tls_files(ctx, namespace, tls)
        moved = _run(ctx, "db-restore", namespace, name, env, user, password, files)
        result = _result(dumped.target, dumped.type, started, moved)
        return result.model_copy(update={"snapshots": dumped.snapshots})
    except (_TargetFailed, SecretProblem) as err:
        return _failed(dumped.target, dumped.type, f"{err.reason}: {err}")
    except ApiError as err:
        return _failed(dumped.target, dumped.type, f"{err.reason}: {err.message}")
