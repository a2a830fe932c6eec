"""The database check of a drill: one dumped target restored into scratch databases, checked
against the row counts recorded at backup time and the user's probes, then dropped.

    check_database_target(...)   -> CheckStatus named database:<target>
    drop_scratch_databases(...)  -> what is still left (after an operator restart)

The restore is the RestoreRequest's (`engine.databases.restore_target`, with a
DatabaseRestoreTarget carrying the scratch names as its databaseMapping); the check is a
`safehold mover db-verify` Job in the same namespace, which also drops the scratch databases,
whatever it found. The scratch names are reported through `on_created` before anything is
created, so that a drill killed mid-way can remove them after a restart; `on_dropped` hears
which are gone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from safehold.api.backup import DatabaseResult
from safehold.api.content import DatabaseTarget
from safehold.api.errors import Failure
from safehold.api.restore import DatabaseRestoreTarget
from safehold.api.verification import CheckResult, CheckStatus, DatabaseCheck
from safehold.contract import env as menv
from safehold.contract.result import VerifyResult
from safehold.engine.databases import Connection, StatusFn, restore_connection, restore_target
from safehold.engine.movers import MoverFailed, MoverLauncher, MoverRun
from safehold.planning import database_checks as checks
from safehold.planning.builders import FILES_DIR

PROBES_KEY = "db-probes.json"  # key of the mover Secret holding the probes (a file)
MAX_MESSAGE = 2000
# Restore failures that certainly come before anything was written (the wait for the server,
# the operator's own checks, the refusal of an existing database): nothing to drop. After any
# other failure a database restored before the one that failed may be there: db-drop runs.
NOTHING_WRITTEN = {
    "TargetNotReady",
    "TargetStarting",
    "TargetUnknown",
    "SecretNotFound",
    "SecretKeyMissing",
    "DatabaseExists",
    "InvalidDatabaseMapping",
}
# The check's reason when the restore could not even reach the server.
RESTORE_REASONS = dict.fromkeys(
    ("TargetNotReady", "TargetStarting", "HostUnreachable"), "TargetNotReady"
)

Entries = Callable[[list[str]], None]


def _name(dumped: DatabaseResult) -> str:
    return f"database:{dumped.target}"


def _status(
    dumped: DatabaseResult, started: float, result: CheckResult, reason: str | None, message: str
) -> CheckStatus:
    text = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
    return CheckStatus(
        name=_name(dumped),
        result=result,
        reason=reason,
        message=text,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _override(plan: checks.ScratchPlan, check: DatabaseCheck | None) -> DatabaseRestoreTarget:
    return DatabaseRestoreTarget(
        target=plan.target,
        host=plan.host,
        port=plan.port,
        credentials_secret=plan.credentials_secret,
        tls=check.tls if check is not None else None,
        database_mapping=dict(plan.mapping),
        clean=False,  # a scratch name that exists is refused, never restored over
        restore_accounts=plan.restore_accounts,
    )


def _plan(
    dumped: DatabaseResult,
    target: DatabaseTarget | None,
    check: DatabaseCheck | None,
    suffix: str,
) -> checks.ScratchPlan:
    if dumped.result != "Succeeded":
        raise checks.InvalidCheck(
            "TargetNotBackedUp", f"the backup holds no dump of this target: {dumped.message}"
        )
    return checks.plan_scratch(
        dumped.target, dumped.type, dumped.databases, check, suffix, target is not None
    )


def check_database_target(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    target: DatabaseTarget | None,
    check: DatabaseCheck | None,
    scratch_suffix: str,
    on_created: Entries,
    on_dropped: Entries | None = None,
    ready_timeout: str = "5m",
    on_status: StatusFn | None = None,
) -> CheckStatus:
    """Restore one dumped target into scratch databases (`<db>_drill_<suffix>` on the
    original server, or on `check.host`; Redis only on `check.host`), compare row counts and
    run the probes, drop the scratch databases. `target` is the original target (from the
    backup's spec), `scratch_suffix` unique per drill (1-16 of [a-z0-9]). `on_created` gets
    the `<target>/<name>` entries before anything exists (when it raises, nothing is
    created); `on_dropped` those that are gone again (any not reported are still there)."""
    started = time.monotonic()
    try:
        plan = _plan(dumped, target, check, scratch_suffix)
    except checks.Skip as skip:
        return _status(dumped, started, "Skipped", skip.reason, skip.message)
    except Failure as err:
        return _status(dumped, started, "Failed", err.reason, err.message)
    run = _Check(launcher, namespace, dumped, target, check, plan, on_dropped, started)
    override = _override(plan, check)
    on_created(plan.entries)
    extra = {menv.DB_SCRATCH_SUFFIX: scratch_suffix}
    restored = restore_target(
        launcher, namespace, dumped, target, override, ready_timeout, on_status, extra
    )
    if restored.result != "Succeeded":
        return run.restore_failed(restored.message or "the restore failed")
    try:
        conn = restore_connection(launcher, namespace, dumped, target, override, ready_timeout)
        env, files = _verify_env(conn, plan, scratch_suffix)
        verified = run.mover("db-verify", "dbv", conn, env, files)
    except Failure as err:  # the mover could not check (MoverFailed), or a Secret is gone
        left = run.cleanup(plan.names)
        return run.status("Failed", err.reason, f"could not check: {err.message}{left}")
    left = run.after(verified)
    where = f"{', '.join(plan.mapping.values()) or 'the scratch server'} on {conn.address}"
    head = f"restored into {where} in {restored.duration_seconds or 0:.1f} s; "
    if verified.passed:
        return run.status("Passed", None, head + verified.message + left)
    return run.status("Failed", verified.reason, verified.message + left)


def _verify_env(
    conn: Connection, plan: checks.ScratchPlan, suffix: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The db-verify mover's environment and files."""
    env = {**conn.env, menv.DB_SCRATCH_SUFFIX: suffix, menv.DB_READY_TIMEOUT: "60"}
    env[menv.DB_VERIFY_COUNTS] = "true" if plan.compare_row_counts else "false"
    for key in (menv.DB_RESTORE_CLEAN, menv.PG_RESTORE_GLOBALS, menv.MYSQL_RESTORE_ACCOUNTS):
        env.pop(key, None)
    files = dict(conn.files)
    if plan.probes:
        files[PROBES_KEY] = checks.probes_json(plan.probes)
        env[menv.DB_PROBES_FILE] = f"{FILES_DIR}/{PROBES_KEY}"
    return env, files


@dataclasses.dataclass(frozen=True)
class _Check:
    """One target's check under way: what its steps after the restore share."""

    launcher: MoverLauncher
    namespace: str
    dumped: DatabaseResult
    target: DatabaseTarget | None
    check: DatabaseCheck | None
    plan: checks.ScratchPlan
    on_dropped: Entries | None
    started: float

    def status(self, result: CheckResult, reason: str | None, message: str) -> CheckStatus:
        return _status(self.dumped, self.started, result, reason, message)

    def mover(
        self, verb: str, job: str, conn: Connection, env: dict[str, str], files: dict[str, str]
    ) -> VerifyResult:
        return _mover(self.launcher, self.namespace, self.dumped, verb, job, conn, env, files)

    def restore_failed(self, message: str) -> CheckStatus:
        """Drop what the restore may have created (a database restored before the one that
        failed; a Redis restore that stopped half-way), not what it never wrote."""
        reason = message.split(":", 1)[0]
        if reason in NOTHING_WRITTEN:
            self._dropped(self.plan.entries)
            left = ""
        else:
            left = self.cleanup(self.plan.names)
        check_reason = RESTORE_REASONS.get(reason, "RestoreFailed")
        return self.status("Failed", check_reason, f"restore: {message}{left}")

    def after(self, verified: VerifyResult) -> str:
        """What the check's own drop left gets a last attempt with db-drop."""
        dropped = [n for n in self.plan.names if n in verified.dropped]
        self._dropped(checks.entries(self.plan.target, dropped))
        rest = [n for n in self.plan.names if n not in dropped]
        return self.cleanup(rest) if rest else ""

    def cleanup(self, names: Sequence[str]) -> str:
        """Drop `names` with db-drop; the sentence naming what is left, if anything."""
        wanted = checks.entries(self.plan.target, names)
        try:
            left = drop_scratch_databases(
                self.launcher, self.namespace, self.dumped, self.target, self.check, wanted
            )
        except Failure as err:
            left, why = wanted, f" ({err.summary()})"
        else:
            why = ""
        self._dropped([e for e in wanted if e not in left])
        return f"; scratch databases not dropped{why}: {', '.join(left)}" if left else ""

    def _dropped(self, gone: list[str]) -> None:
        if gone and self.on_dropped is not None:
            self.on_dropped(gone)


def _mover(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    verb: str,
    job: str,
    conn: Connection,
    env: dict[str, str],
    files: dict[str, str],
) -> VerifyResult:
    """Run a db-verify or db-drop Job; its result, or MoverFailed."""
    user, password = conn.credentials
    run = MoverRun(
        verb=verb,
        namespace=namespace,
        subject=dumped.target,
        suffix=job,
        access=launcher.own_repository("read"),
        env={**env, **({menv.DB_USER: user} if user else {})},
        secret_env={menv.DB_PASSWORD: password} if password else {},
        files=files,
    )
    return launcher.launch(run, VerifyResult)


def drop_scratch_databases(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    target: DatabaseTarget | None,
    check: DatabaseCheck | None,
    entries: Sequence[str],
) -> list[str]:
    """Drop the scratch databases of `dumped`'s target among `entries` (as `on_created`
    reported them, `<target>/<name>`; those of other targets are ignored) with a db-drop
    Job. Returns the entries still there (empty: all gone); raises Failure when the Job
    could not run (a Secret missing, the server unreachable)."""
    names = checks.names_of(dumped.target, entries)
    if not names:
        return []
    suffix = _suffix_of(names)
    override = DatabaseRestoreTarget(
        target=dumped.target,
        host=check.host if check else None,
        port=check.port if check else None,
        credentials_secret=check.credentials_secret if check else None,
        tls=check.tls if check else None,
    )
    conn = restore_connection(launcher, namespace, dumped, target, override)
    env = {**conn.env, menv.DB_DROP: ",".join(names), menv.DB_SCRATCH_SUFFIX: suffix}
    try:
        dropped = _mover(launcher, namespace, dumped, "db-drop", "dbd", conn, env, conn.files)
    except MoverFailed as err:
        raise Failure(err.reason, err.message) from None
    return checks.entries(dumped.target, [n for n in names if n not in dropped.dropped])


def _suffix_of(names: Sequence[str]) -> str:
    """The drill suffix of scratch names (`…_drill_<suffix>`, Redis `drill_<suffix>`)."""
    suffix = names[0].rsplit("drill_", 1)[-1]
    return checks.check_suffix(suffix)
