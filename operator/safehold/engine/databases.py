"""Database targets of a backup or restore: one `safehold mover db-dump|db-restore` Job each.

The Job fills the environment contract of `safehold.contract.env`; the database password
travels only in the Job's Secret. A failing target does not stop the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.api.backup import DatabaseResult, DumpedFile
from safehold.api.base import JSON
from safehold.api.content import DatabaseCredentials, DatabaseTarget, DatabaseTls
from safehold.api.durations import parse_duration
from safehold.api.errors import Failure
from safehold.api.restore import DatabaseRestoreTarget
from safehold.contract import env as menv
from safehold.contract.result import Result
from safehold.engine.movers import MoverFailed, MoverLauncher, MoverRun
from safehold.engine.settings import restic_cache_dir
from safehold.kube.secrets import SecretProblem, read_secret_key
from safehold.planning import rowcounts
from safehold.planning.builders import FILES_DIR
from safehold.storage import restic

PARALLELISM = 2
SCRATCH = "/tmp"
DEFAULT_USERNAME_KEY = "username"
DB_CA_KEY = "db-ca.crt"  # key of the mover Secret holding the database server's CA

# The mover switch that replays a target's stored accounts, by engine.
ACCOUNTS_SWITCH = {"postgresql": menv.PG_RESTORE_GLOBALS, "mysql": menv.MYSQL_RESTORE_ACCOUNTS}


class TargetFailed(Failure):
    """A database target cannot be dumped or restored as asked."""


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


def tls_environment(tls: DatabaseTls | None) -> dict[str, str]:
    """The mover's TLS variables for these settings (pure); none: the mover's default."""
    if tls is None:
        return {}
    env: dict[str, str] = {menv.DB_TLS_MODE: tls.mode}
    if tls.ca_secret:
        env[menv.DB_TLS_CA_FILE] = f"{FILES_DIR}/{DB_CA_KEY}"
    return env


class _Secrets:
    """Reads what a target's Job needs from Secrets of the run's namespace."""

    def __init__(self, launcher: MoverLauncher, namespace: str) -> None:
        self.core = launcher.clients.core
        self.namespace = namespace

    def credentials(self, creds: DatabaseCredentials | None, db_type: str) -> tuple[str, str]:
        if creds is None:
            return "", ""
        password = read_secret_key(self.core, self.namespace, creds.name, creds.password_key)
        key = creds.username_key
        try:
            user = read_secret_key(self.core, self.namespace, creds.name, key)
        except SecretProblem as err:
            # Redis needs no user (its default user); another key the target names must be
            # there. (The default cannot be told from a key set to it: the CRD's default
            # is stored in every object.)
            optional = db_type == "redis" and key == DEFAULT_USERNAME_KEY
            if err.reason != "SecretKeyMissing" or not optional:
                raise
            user = ""
        return user, password

    def tls_files(self, tls: DatabaseTls | None) -> dict[str, str]:
        """The CA of these TLS settings, for the mover Secret (mounted as a file)."""
        if tls is None or not tls.ca_secret:
            return {}
        return {DB_CA_KEY: read_secret_key(self.core, self.namespace, tls.ca_secret, "ca.crt")}


def _launch(
    launcher: MoverLauncher,
    verb: str,
    namespace: str,
    target: str,
    suffix: str,
    env: dict[str, str],
    credentials: tuple[str, str],
    files: dict[str, str],
    on_progress: Callable[[JSON], None] | None = None,
) -> Result:
    user, password = credentials
    run = MoverRun(
        verb=verb,
        namespace=namespace,
        subject=target,
        suffix=suffix,
        access=launcher.own_repository("append" if verb == "db-dump" else "read"),
        env={**env, **({menv.DB_USER: user} if user else {})},
        secret_env={menv.DB_PASSWORD: password} if password else {},
        files=files,
    )
    return launcher.launch(run, Result, on_progress=on_progress)


def _failed(target: str, type_: str, message: str, started: float | None = None) -> DatabaseResult:
    """A target that failed; with `started`, how long it ran before it did."""
    seconds = None if started is None else round(time.monotonic() - started, 3)
    return DatabaseResult(
        target=target, type=type_, result="Failed", message=message, duration_seconds=seconds
    )


def _result(target: str, type_: str, started: float, moved: Result) -> DatabaseResult:
    dumped = [d for d in moved.databases if d.file and d.snapshot]
    snapshots = [d.snapshot for d in moved.databases if d.snapshot]
    return DatabaseResult(
        target=target,
        type=type_,
        result="Succeeded",
        # PostgreSQL's globals, MySQL's accounts and the row counts are files of the
        # target, not databases.
        databases=[
            d.name
            for d in moved.databases
            if d.name
            and not d.file.endswith("globals.sql")
            and not d.file.startswith("mysql-system/")
            and not rowcounts.is_counts_file(d.file)
        ],
        snapshot_id=snapshots[0] if snapshots else None,
        snapshots=snapshots,
        files=[
            DumpedFile(path=d.file, snapshot=d.snapshot, bytes=d.bytesProcessed) for d in dumped
        ],
        bytes=moved.bytesProcessed,
        server_version=moved.serverVersion or None,
        tool_version=moved.toolVersion or None,
        duration_seconds=round(time.monotonic() - started, 3),
        warnings=moved.warnings,
    )


def target_warnings(results: Sequence[DatabaseResult]) -> list[str]:
    """The targets' warnings for the run's status, each naming its target."""
    return [f"database target {d.target}: {w}" for d in results for w in d.warnings]


def dump_target(launcher: MoverLauncher, namespace: str, target: DatabaseTarget) -> DatabaseResult:
    started = time.monotonic()
    secrets = _Secrets(launcher, namespace)
    try:
        credentials = secrets.credentials(target.credentials_secret, target.type)
        env = target_environment(target, namespace)
        files = secrets.tls_files(target.tls)
        moved = _launch(launcher, "db-dump", namespace, target.name, "db", env, credentials, files)
    except MoverFailed as err:
        failed = _failed(target.name, target.type, err.summary(), started)
        return _forget_partial(launcher, failed, Result.from_doc(err.document))
    except Failure as err:
        return _failed(target.name, target.type, err.summary(), started)
    return _result(target.name, target.type, started, moved)


def _forget_partial(
    launcher: MoverLauncher, failed: DatabaseResult, partial: Result
) -> DatabaseResult:
    """A target is wholly in the repository or not at all: the snapshots a failed dump already
    made are forgotten (the mover's grant may not delete). When the repository is busy they
    stay recorded on the failed target, so deleting the backup forgets them."""
    made = [d.snapshot for d in partial.databases if d.snapshot]
    if not made:
        return failed
    repo = launcher.location.repository_at(launcher.own_repository("read").key, restic_cache_dir())
    try:
        restic.run(repo, ["forget", "--retry-lock", "30s", *made], timeout=120)
    except restic.ResticError:
        return failed.model_copy(update={"snapshots": made})
    return failed


def dump_targets(
    launcher: MoverLauncher, namespace: str, targets: Sequence[DatabaseTarget]
) -> list[DatabaseResult]:
    with ThreadPoolExecutor(max_workers=PARALLELISM) as pool:
        return list(pool.map(lambda t: dump_target(launcher, namespace, t), targets))


def _restore_environment(
    dumped: DatabaseResult,
    original: DatabaseTarget | None,
    override: DatabaseRestoreTarget | None,
    namespace: str,
    ready_timeout: str,
) -> dict[str, str]:
    """Where and how one dumped target is restored (pure): the original target's settings,
    with the override's host, port, mapping and switches over them."""
    env = (
        target_environment(original, namespace)
        if original
        else {menv.DB_TYPE: dumped.type, menv.TARGET: dumped.target, menv.SCRATCH_DIR: SCRATCH}
    )
    if override is not None:
        if override.host:
            env[menv.DB_HOST] = override.host
        if override.port:
            env[menv.DB_PORT] = str(override.port)
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
    for key in (menv.DB_TLS_MODE, menv.DB_TLS_CA_FILE):
        env.pop(key, None)
    return env | tls_environment(restore_tls(original, override))


def restore_tls(
    original: DatabaseTarget | None, override: DatabaseRestoreTarget | None
) -> DatabaseTls | None:
    """The override's TLS settings replace the original's (a restore into another server)."""
    if override is not None and override.tls is not None:
        return override.tls
    return original.tls if original is not None else None


def _text(value: object, limit: int = 200) -> str:
    return str(value)[:limit]


def restore_status(target: str, address: str, timeout: str, progress: JSON | None) -> str:
    """What a database restore is doing, for the RestoreRequest's condition (pure). The
    progress document comes from the mover's log: shown bounded, never trusted as more."""
    if progress is None:
        return (
            f"database target {target}: waiting for {address} to accept connections"
            f" (up to {timeout}), then restoring"
        )
    if progress.get("phase") == "restoring":
        return f"database target {target}: restoring into {address}"
    return (
        f"database target {target}: waiting for {address} to accept connections:"
        f" {_text(progress.get('attempts'), 8)} attempt(s) in"
        f" {_text(progress.get('seconds'), 8)} s of {_text(progress.get('timeoutSeconds'), 8)} s;"
        f" last error {_text(progress.get('lastError'))}"
    )


StatusFn = Callable[[str], None]


@dataclass(frozen=True)
class Connection:
    """How a mover reaches the server one dumped target is restored into: its environment
    (no secret), the credentials for the Job's Secret, the files (a CA) and the address."""

    env: dict[str, str]
    credentials: tuple[str, str] = field(repr=False)
    files: dict[str, str] = field(repr=False)
    address: str


def restore_connection(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    original: DatabaseTarget | None,
    override: DatabaseRestoreTarget | None,
    ready_timeout: str = "5m",
) -> Connection:
    """The connection of a restore of `dumped` into its original server or the override's;
    TargetFailed when neither says where, SecretProblem when a Secret is missing."""
    if original is None and (override is None or override.host is None):
        raise TargetFailed(
            "TargetUnknown",
            "the backup does not say where this target "
            "lives; name a host in spec.databases.targets",
        )
    secrets = _Secrets(launcher, namespace)
    env = _restore_environment(dumped, original, override, namespace, ready_timeout)
    creds = original.credentials_secret if original else None
    if override is not None and override.credentials_secret:
        creds = DatabaseCredentials(name=override.credentials_secret)
    credentials = secrets.credentials(creds, dumped.type)
    files = secrets.tls_files(restore_tls(original, override))
    port = env.get(menv.DB_PORT) or str(menv.DEFAULT_PORTS.get(dumped.type, ""))
    return Connection(env, credentials, files, f"{env.get(menv.DB_HOST, '')}:{port}")


def restore_target(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    original: DatabaseTarget | None,
    override: DatabaseRestoreTarget | None,
    ready_timeout: str = "5m",
    on_status: StatusFn | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> DatabaseResult:
    """Restore one dumped target into its original server or the override's; the mover
    first waits up to `ready_timeout` for the server to accept connections. `on_status`
    hears what it waits for and, where the mover's log can be read, how that goes.
    `extra_env` adds mover variables (a drill's scratch suffix)."""
    started = time.monotonic()
    try:
        conn = restore_connection(launcher, namespace, dumped, original, override, ready_timeout)

        def progress(doc: JSON | None) -> None:
            if on_status is not None:
                on_status(restore_status(dumped.target, conn.address, ready_timeout, doc))

        progress(None)
        env = {**conn.env, **(extra_env or {})}
        moved = _launch(
            launcher, "db-restore", namespace, dumped.target, "dbr", env, conn.credentials,
            conn.files, progress if on_status is not None else None,
        )  # fmt: skip
    except Failure as err:
        return _failed(dumped.target, dumped.type, err.summary())
    result = _result(dumped.target, dumped.type, started, moved)
    return result.model_copy(update={"snapshots": dumped.snapshots})
