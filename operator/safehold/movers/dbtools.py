"""Helpers shared by the database movers: running client tools, storing dumps, finding them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from safehold.contract import env as menv
from safehold.contract.result import (
    AUTHENTICATION_FAILED,
    DATABASE_EXISTS,
    DATABASE_NOT_FOUND,
    DUMP_FAILED,
    HOST_UNREACHABLE,
    RESTORE_FAILED,
    SNAPSHOT_NOT_FOUND,
    TARGET_NOT_READY,
    TARGET_STARTING,
    TLS_FAILED,
    TOOL_NOT_FOUND,
    DatabaseResult,
    MoverError,
    Result,
)
from safehold.planning import rowcounts
from safehold.storage import restic

T = TypeVar("T")

_KEEP_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR")


@dataclasses.dataclass(frozen=True)
class ErrorPatterns:
    """How one engine's client tools word each failure, turned into a status reason.

    Checked in one order for every engine: authentication, missing database, server starting,
    TLS, unreachable; the first match names the reason. An unreachable match does not count
    when `lost_mid_work` also appears: the server was reached and dropped the connection.
    """

    auth: re.Pattern[str]
    unreachable: re.Pattern[str]
    no_database: re.Pattern[str] | None = None
    starting: re.Pattern[str] | None = None
    tls: re.Pattern[str] | None = None
    lost_mid_work: str | None = None

    def classify(self, text: str, default: str) -> str:
        checks = (
            (self.auth, AUTHENTICATION_FAILED),
            (self.no_database, DATABASE_NOT_FOUND),
            (self.starting, TARGET_STARTING),
            (self.tls, TLS_FAILED),
        )
        for pattern, reason in checks:
            if pattern is not None and pattern.search(text):
                return reason
        if self.unreachable.search(text) and not (
            self.lost_mid_work and self.lost_mid_work in text
        ):
            return HOST_UNREACHABLE
        return default


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for a client tool: no unrelated secret of ours leaks into it."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env | dict(extra or {})


def which(*names: str) -> str:
    """The first of `names` found on PATH (e.g. mariadb-dump before mysqldump)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise MoverError(TOOL_NOT_FOUND, f"none of {', '.join(names)} is installed")


def run_tool(
    cmd: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 120,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(cmd),
            env=dict(env),
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise MoverError(TOOL_NOT_FOUND, f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise MoverError(
            "HostUnreachable", f"{os.path.basename(cmd[0])} did not answer in {timeout:.0f}s"
        ) from None


@functools.cache
def tool_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def quote_name(name: str) -> str:
    """A database name made safe for a file name and a restic tag."""
    return urllib.parse.quote(name, safe="-_.@+=:")


def unquote_name(name: str) -> str:
    return urllib.parse.unquote(name)


def tail(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def store(
    cfg: menv.DbConfig,
    repo: restic.Repository,
    result: Result,
    name: str,
    filename: str,
    command: Sequence[str],
    command_env: Mapping[str, str],
    classify: Any,
) -> DatabaseResult:
    """Stream `command`'s stdout into a new snapshot holding `filename`; record it in `result`.

    A failing command leaves no snapshot; `classify(stderr, default)` names the reason.
    """
    tags = (*cfg.tags, f"{menv.TAG_DATABASE}={quote_name(name)}")
    try:
        summary = restic.backup_from_command(repo, filename, command, tags, command_env=command_env)
    except restic.ResticError as err:
        if err.reason == "CommandFailed":
            text = str(err)
            raise MoverError(classify(text, DUMP_FAILED), f"{name}: {tail(text)}") from None
        raise
    item = DatabaseResult(
        name=name,
        file=filename,
        snapshot=summary.snapshot_id,
        bytesProcessed=summary.bytes_processed,
        bytesAdded=summary.bytes_added,
        seconds=summary.duration_seconds,
    )
    result.add(item)
    return item


# The RestoreRequest field that allows a restore over existing data (never a mover variable:
# whoever reads the message sets it there).
CLEAN_FIELD = "spec.databases.targets[].clean"


def refuse_existing(
    cfg: menv.DbConfig, existing: Iterable[str], clean_does: str = "restore over them"
) -> None:
    """Refuse before touching anything when the target already holds what the restore would
    write and clean was not asked for."""
    found = list(existing)
    if found and not cfg.restore_clean:
        raise MoverError(
            DATABASE_EXISTS,
            f"already in the target: {', '.join(sorted(found))}; set {CLEAN_FIELD}: true in"
            f" the RestoreRequest to {clean_does}",
        )


def drop_created(drop: Callable[[], object], target: str) -> str:
    """Drop a database this run created and could not fill (nothing else is ever dropped);
    the sentence to add to the failure's message."""
    try:
        drop()
    except MoverError as err:
        return f" (the database {target} it had created is left: {err.reason})"
    return f" (the database {target} it had created was dropped again)"


def replay_script(
    repo: restic.Repository,
    snap: Mapping[str, Any],
    filename: str,
    command: Sequence[str],
    command_env: Mapping[str, str],
    classify: Callable[[str, str], str],
    what: str,
    result: Result,
) -> None:
    """Feed a stored SQL script (roles, accounts) to a client; failing statements (an account
    that exists) become warnings, at most five named; no statement run at all is an error."""
    proc = restic.dump_into_command(
        repo, str(snap["id"]), "/" + filename, command, command_env=command_env
    )
    lines = proc.stderr.decode(errors="replace").splitlines()
    errors = [ln.split("ERROR", 1)[-1].lstrip(": ").strip() for ln in lines if "ERROR" in ln]
    if proc.returncode != 0 and not errors:
        text = "\n".join(lines)
        raise MoverError(classify(text, RESTORE_FAILED), f"{what}: {tail(text)}")
    result.warnings += [f"{what}: {e}" for e in errors[:5]]
    if len(errors) > 5:
        result.warnings.append(f"{what}: {len(errors)} statements failed in all")


def stored_files(cfg: menv.DbConfig, repo: restic.Repository) -> dict[str, dict[str, Any]]:
    """file path inside the snapshot (no leading /) → the newest snapshot holding it.

    SAFEHOLD_DB_FILES names them outright (no restic start). Otherwise, with
    SAFEHOLD_DB_SNAPSHOT (comma list of ids) only those snapshots count, else every snapshot
    tagged with this backup and target (all tags at once: restic ANDs a comma list).
    """
    if cfg.files:
        return {
            path: {"id": snap, "summary": {"total_bytes_processed": size}}
            for path, (snap, size) in cfg.files.items()
        }
    if cfg.snapshot:
        ids = [s.strip() for s in cfg.snapshot.split(",") if s.strip()]
        try:
            found = restic.run_json(repo, ["snapshots", "--no-lock", *ids]) or []
        except restic.ResticError as err:
            raise MoverError(SNAPSHOT_NOT_FOUND, str(err)) from None
    else:
        found = restic.run_json(repo, ["snapshots", "--no-lock", "--tag", ",".join(cfg.tags)])
        found = found or []
    files: dict[str, dict[str, Any]] = {}
    for snap in sorted(found, key=lambda s: str(s.get("time", ""))):
        for path in snap.get("paths", []):
            files[str(path).lstrip("/")] = snap
    if not files:
        raise MoverError(
            SNAPSHOT_NOT_FOUND,
            f"no database snapshot of backup {cfg.backup} target {cfg.target}"
            + (f" among {cfg.snapshot}" if cfg.snapshot else ""),
        )
    return files


def selected(cfg: menv.DbConfig, available: Sequence[str]) -> list[str]:
    """The databases to restore: SAFEHOLD_DB_DATABASES if given (each must exist), else all."""
    if not cfg.databases:
        return list(available)
    missing = [d for d in cfg.databases if d not in available]
    if missing:
        raise MoverError("DatabaseNotFound", f"not in the backup: {', '.join(missing)}")
    return list(cfg.databases)


def restored(
    result: Result, name: str, target: str, filename: str, snap: Mapping[str, Any], secs: float
) -> None:
    summary = snap.get("summary") or {}
    result.add(
        DatabaseResult(
            name=name,
            file=filename,
            snapshot=str(snap.get("id", "")),
            bytesProcessed=int(summary.get("total_bytes_processed", 0)),
            seconds=secs,
            target=target,
        )
    )


# Failures of a connection attempt that a server which is not up yet produces.
NOT_YET = (HOST_UNREACHABLE, TARGET_STARTING)


def wait_until_ready(
    probe: Callable[[menv.DbConfig], T],
    cfg: menv.DbConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, T]:
    """Call `probe(cfg)` until it succeeds or `cfg.ready_timeout` seconds have passed.

    Only "not up yet" failures (refused, unreachable, unresolvable, starting up) are retried;
    anything else, a rejected password first of all, is raised at once. Returns the number of
    attempts and what the successful probe returned; raises MoverError(TargetNotReady) when
    the time is up (with a timeout of 0, the first failure itself). `report` hears of each
    failed attempt (`waiting_progress`) while there is time left.
    """
    started = time.monotonic()
    deadline = started + cfg.ready_timeout
    delay = 1.0
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        # One attempt never outlasts the deadline by more than a second.
        timeout = max(1, min(cfg.connect_timeout, int(remaining) + 1))
        try:
            return attempts, probe(dataclasses.replace(cfg, connect_timeout=timeout))
        except MoverError as err:
            if err.reason not in NOT_YET or cfg.ready_timeout <= 0:
                raise
            last = err
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MoverError(
                TARGET_NOT_READY,
                f"{cfg.host}:{cfg.port} did not accept connections within "
                f"{cfg.ready_timeout} s ({attempts} attempts); last error: "
                f"{last.reason}: {tail(str(last), 2)}",
            )
        if report is not None:
            report(waiting_progress(cfg, attempts, time.monotonic() - started, last))
        sleep(min(delay, remaining))
        delay = min(delay * 1.5, 5.0)


def waiting_progress(
    cfg: menv.DbConfig, attempts: int, seconds: float, last: MoverError
) -> dict[str, Any]:
    """The progress document of a restore waiting for its target (the operator shows it)."""
    return {
        "phase": "waiting",
        "address": f"{cfg.host}:{cfg.port}",
        "attempts": attempts,
        "seconds": round(seconds),
        "timeoutSeconds": cfg.ready_timeout,
        "lastError": f"{last.reason}: {tail(last.message, 1)[:200]}",
    }


@contextlib.contextmanager
def counts_store(
    cfg: menv.DbConfig, repo: restic.Repository, result: Result
) -> Iterator[Callable[[rowcounts.RowCounts | None], None]]:
    """A function that stores the row counts of a dump beside it (`<engine>/counts.json`,
    its own small snapshot, listed among the target's files). Its restic process starts
    here, so that opening the repository overlaps the dump; counts never stored (a failed
    dump, None) leave no snapshot. The dump stands without them: a failure is a warning."""
    filename = rowcounts.counts_file(cfg.type)
    pending = restic.StdinBackup(repo, filename, (*cfg.tags, f"{menv.TAG_DATABASE}=counts"))
    started = time.monotonic()
    stored = False

    def store(counts: rowcounts.RowCounts | None) -> None:
        nonlocal stored
        stored = True
        if counts is None:
            pending.cancel()
            return
        try:
            summary = pending.finish(rowcounts.to_bytes(counts))
        except restic.ResticError as err:
            result.warnings.append(f"row counts not stored: {err.reason}: {tail(str(err), 2)}")
            return
        item = DatabaseResult(
            name="counts",
            file=filename,
            snapshot=summary.snapshot_id,
            bytesProcessed=summary.bytes_processed,
            bytesAdded=summary.bytes_added,
            seconds=time.monotonic() - started,
        )
        result.add(item)

    try:
        yield store
    finally:
        if not stored:
            pending.cancel()


_EOF = object()


class Session:
    """An interactive client (psql, mariadb) fed statements on its stdin while its output is
    read line by line: both flush after each statement (psql always, mariadb with
    --unbuffered). stderr is collected on the side; the process is killed on exit."""

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        try:
            self.proc = subprocess.Popen(
                list(cmd),
                env=dict(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise MoverError(TOOL_NOT_FOUND, f"{cmd[0]} is not installed") from None
        self._lines: queue.Queue[object] = queue.Queue()
        self._stderr: list[bytes] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.decode(errors="replace").rstrip("\n"))
        self._lines.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def send(self, text: str) -> bool:
        """Write statements; False when the client is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True

    def read_until(self, marker: str, timeout: float | None = None) -> list[str] | None:
        """The lines before `marker`; None when the client ended (or `timeout` passed)
        first."""
        lines: list[str] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=wait)
            except queue.Empty:
                return None
            if line is _EOF:
                self._lines.put(_EOF)
                return None
            if line == marker:
                return lines
            lines.append(str(line))

    def errors(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def close(self, final: str = "", timeout: float = 60) -> int | None:
        """Send the last statements, end the input and wait; the exit code (None: killed)."""
        self.send(final)
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        return code
