"""The one module that drives restic, the data engine for every payload byte.

Secrets reach restic only through the environment of the child process, never its
command line. Every error text is redacted before it leaves this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from safehold.api.errors import Failure
from safehold.contract.env import RESTIC_OPTIONS
from safehold.storage.redact import redact

if TYPE_CHECKING:  # movers import this module; keep boto3 out of their start-up
    from safehold.storage.s3 import S3Settings

# Compression of database dumps (`restic backup --compression`); file trees keep restic's
# default (`auto`).
STREAM_COMPRESSION = "fastest"

# restic's documented exit codes (0.17+).
EXIT_REPOSITORY_MISSING = 10
EXIT_LOCK_FAILED = 11
EXIT_WRONG_PASSWORD = 12


class ResticError(Failure):
    """restic failed; `reason` is a CamelCase status reason, the message is redacted."""

    def __init__(self, reason: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(reason, message)
        self.exit_code = exit_code


def restic_binary() -> str:
    found = os.environ.get("SAFEHOLD_RESTIC") or shutil.which("restic")
    if not found:
        raise ResticError("ResticNotFound", "the restic binary is not on PATH")
    return found


@dataclass(frozen=True)
class Repository:
    """A restic repository and the environment that unlocks it. Holds secrets."""

    url: str
    env: Mapping[str, str] = field(repr=False)
    options: tuple[str, ...] = ()

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.env.items() if k in _SECRET_ENV)


_SECRET_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "RESTIC_PASSWORD",
    "RESTIC_FROM_PASSWORD",
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
}


def repository_url(settings: S3Settings, key: str) -> str:
    """restic's S3 URL of the repository at `key` below the location's prefix."""
    endpoint = settings.endpoint or f"https://s3.{settings.region}.amazonaws.com"
    return f"s3:{endpoint.rstrip('/')}/{settings.bucket}/{settings.layout.key(key)}"


def repository_for(
    settings: S3Settings, namespace: str, password: str, cache_dir: str | None = None
) -> Repository:
    """The repository of one namespace's backups inside a location."""
    return repository_at(settings, settings.layout.repository(namespace), password, cache_dir)


def repository_at(
    settings: S3Settings, key: str, password: str, cache_dir: str | None = None
) -> Repository:
    """The repository at `key` below the location's prefix, opened with `password`."""
    env = {
        "AWS_ACCESS_KEY_ID": settings.access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.secret_access_key,
        "AWS_DEFAULT_REGION": settings.region,
        "RESTIC_PASSWORD": password,
    }
    if cache_dir:
        env["RESTIC_CACHE_DIR"] = cache_dir
    options = ["-o", f"s3.region={settings.region}"]
    if settings.force_path_style:
        options += ["-o", "s3.bucket-lookup=path"]
    if settings.insecure_skip_tls_verify:
        options.append("--insecure-tls")
    else:
        ca = settings.ca_file()
        if ca is not None:
            options += ["--cacert", str(ca)]
    if not cache_dir:
        options.append("--no-cache")
    return Repository(repository_url(settings, key), env, tuple(options))


def _child_env(repo: Repository) -> dict[str, str]:
    # Only what restic needs, so no unrelated secret of the parent leaks into the child.
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR")
    base = {k: v for k, v in os.environ.items() if k in keep}
    return base | {"RESTIC_REPOSITORY": repo.url} | dict(repo.env)


def run(
    repo: Repository,
    args: Sequence[str],
    *,
    timeout: float = 300,
    input_bytes: bytes | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one restic command; raises ResticError with a classified reason on failure."""
    cmd = [restic_binary(), *repo.options, *args]
    try:
        proc = subprocess.run(
            cmd,
            env=_child_env(repo),
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as err:
        raise ResticError(
            "RepositoryTimeout", f"restic {args[0]} did not finish in {timeout:.0f}s"
        ) from err
    if proc.returncode != 0:
        raise _failure(proc.returncode, proc.stderr, repo.secret_values)
    return proc


def _failure(code: int, stderr: bytes, secrets: Sequence[str]) -> ResticError:
    """The error for a failed restic run: classified reason, redacted last lines."""
    text = redact(stderr.decode(errors="replace").strip(), secrets)
    return ResticError(_reason(code, text), _last_lines(text), code)


def _reason(code: int, stderr: str) -> str:
    if code == EXIT_REPOSITORY_MISSING:
        return "RepositoryNotFound"
    # A key that opens but whose master key does not decrypt `config`: two writers created the
    # repository at once with different passwords, and the other's `config` won.
    if (
        code == EXIT_WRONG_PASSWORD
        or "wrong password" in stderr
        or "ciphertext verification" in stderr
    ):
        return "RepositoryPasswordWrong"
    if code == EXIT_LOCK_FAILED:
        return "RepositoryLocked"
    if "verifying" in stderr.lower() and "error" in stderr.lower():
        return "FileContentMismatch"
    if "pack" in stderr and ("not found" in stderr or "does not exist" in stderr):
        return "RepositoryDamaged"
    if "dial tcp" in stderr or "connection refused" in stderr or "no such host" in stderr:
        return "EndpointUnreachable"
    if any(
        m in stderr for m in ("failed to find snapshot", "no matching ID", "not found in snapshot")
    ):
        return "SnapshotNotFound"
    return "RepositoryError"


def _last_lines(text: str, count: int = 5) -> str:
    return "\n".join(text.splitlines()[-count:]) or "restic failed without output"


def run_json(repo: Repository, args: Sequence[str], *, timeout: float = 300) -> Any:
    """Run a restic command with --json and parse its single JSON document."""
    out = run(repo, [*args, "--json"], timeout=timeout).stdout
    return json.loads(out or b"null")


def is_initialized(repo: Repository) -> bool:
    """True when the repository exists and the password opens it; False when it is absent.

    Raises ResticError(RepositoryPasswordWrong) when it exists but the password is wrong.
    """
    try:
        run(repo, ["cat", "config", "--no-lock"], timeout=60)
    except ResticError as err:
        if err.reason == "RepositoryNotFound":
            return False
        raise
    return True


def init(repo: Repository) -> None:
    """Create the repository (encryption keys derived from the password)."""
    run(repo, ["init"], timeout=120)


_init_locks: dict[str, threading.Lock] = {}
_init_locks_guard = threading.Lock()


def init_lock(repo: Repository) -> threading.Lock:
    """The lock every creation of this repository in this process holds.

    Two concurrent `restic init`s (a location probe and a first backup) would each write their
    own master key, leaving a repository no key can open.
    """
    with _init_locks_guard:
        return _init_locks.setdefault(_storage_key(repo.url), threading.Lock())


def _storage_key(url: str) -> str:
    """Where a repository lives, however its endpoint is spelled (127.0.0.1 or localhost):
    the bucket and key part of its URL."""
    scheme, _, rest = url.partition(":")
    return f"{scheme}:{urlsplit(rest).path}" if "://" in rest else url


_exclusive_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def maintenance_lock(repo: Repository) -> Iterator[None]:
    """One deleting or pruning operation per repository at a time in this process (restic's
    own exclusive lock would make the second one wait and then fail)."""
    with _init_locks_guard:
        lock = _exclusive_locks.setdefault(repo.url, threading.Lock())
    with lock:
        yield


def ensure_initialized(repo: Repository, exists: Callable[[], bool] | None = None) -> bool:
    """Initialise the repository if missing; returns True if it was created now.

    `exists` answers whether the repository is there without restic (the location probe
    looks for its `config` object over S3); by default restic opens it, which also checks the
    password. After creating it, restic opens it again: another writer of the same prefix
    (another process, or another location spelling the endpoint differently) may have
    created it at the same moment with another password, and then this password does not
    open it (ResticError RepositoryPasswordWrong).
    """
    with init_lock(repo):
        if exists() if exists is not None else is_initialized(repo):
            return False
        try:
            init(repo)
        except ResticError as err:
            if "already exists" not in err.message and "already initialized" not in err.message:
                raise
            is_initialized(repo)  # someone else's: this password must open it
            return False
        is_initialized(repo)
        return True


# ------------------------------------------------------------------ integrity (check, repair)
_PACK_MISSING = re.compile(r"pack ([0-9a-f]{64}): does not exist")
_PACK_DAMAGED = re.compile(r"pack ([0-9a-f]{64}) contains \d+ error")
_TREE_OWNER = re.compile(r"which belongs to snapshot ([0-9a-f]{64})")
_REPAIR_SNAPSHOT = re.compile(r"^snapshot ([0-9a-f]{8,64}) of ")
_CHECK_NOISE = (
    "The repository is damaged",
    "The repository contains damaged",
    "restic repair",
    "Damaged pack files can be caused",
)


@dataclass(frozen=True)
class CheckReport:
    """What one `restic check` found (errors redacted, restic's advice left out)."""

    damaged: bool
    """restic found errors in the repository's data or structure (exit 1, "repository
    contains errors"); False with `failure` set when restic could not check at all."""
    errors: tuple[str, ...] = ()
    """restic's error messages, in order."""
    missing_packs: frozenset[str] = frozenset()
    """Pack files the index names that are not in the bucket."""
    damaged_packs: frozenset[str] = frozenset()
    """Pack files whose content did not verify (only found when data is read)."""
    failure: ResticError | None = None
    """Why restic could not check (not found, wrong password, store down, locked)."""


def run_unchecked(
    repo: Repository, args: Sequence[str], *, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """Run one restic command and return it whatever its exit code; stdout and stderr
    redacted. Raises ResticError(RepositoryTimeout) past `timeout`."""
    cmd = [restic_binary(), *repo.options, *args]
    try:
        proc = subprocess.run(
            cmd, env=_child_env(repo), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise ResticError(
            "RepositoryTimeout", f"restic {args[0]} did not finish in {timeout:.0f}s"
        ) from err
    secrets = repo.secret_values
    proc.stdout = redact(proc.stdout.decode(errors="replace"), secrets).encode()
    proc.stderr = redact(proc.stderr.decode(errors="replace"), secrets).encode()
    return proc


def check(
    repo: Repository, subset: tuple[int, int] | None = None, *, timeout: float = 6 * 3600
) -> CheckReport:
    """`restic check` without a lock (read-only: never blocks a backup, works on ReadOnly
    locations); with `subset` (k, n) it also reads the k-th of n parts of the pack files
    (`--read-data-subset=k/n`). Damage is a result, not an exception."""
    args = ["check", "--no-lock", "--json"]
    if subset is not None:
        args.append(f"--read-data-subset={subset[0]}/{subset[1]}")
    proc = run_unchecked(repo, args, timeout=timeout)
    stderr = proc.stderr.decode()
    errors = tuple(_check_errors(stderr))
    summary = _json_lines(proc.stdout.decode(), "summary")
    if proc.returncode == 0:
        return CheckReport(False, errors)
    if "repository contains errors" not in stderr:
        return CheckReport(False, errors, failure=_check_failure(proc.returncode, stderr))
    text = "\n".join(errors)
    broken = {str(p) for s in summary for p in s.get("broken_packs") or []}
    return CheckReport(
        True,
        errors,
        frozenset(_PACK_MISSING.findall(text)),
        frozenset(broken | set(_PACK_DAMAGED.findall(text))),
    )


def _json_lines(text: str, message_type: str) -> list[dict[str, Any]]:
    docs = (_json_line(line.strip()) for line in text.splitlines())
    return [d for d in docs if d is not None and d.get("message_type") == message_type]


def _check_errors(stderr: str) -> list[str]:
    """restic check's error messages, one per line, each once, without its advice."""
    found: dict[str, None] = {}
    for doc in _json_lines(stderr, "error"):
        for raw in str(doc.get("message", "")).splitlines():
            line = raw.strip()
            if line and not line.startswith(_CHECK_NOISE) and not line.endswith(":"):
                found[line] = None
    return list(found)


def _check_failure(code: int, stderr: str) -> ResticError:
    """Why `restic check --json` could not check: its fatal message, classified."""
    fatal = [str(d.get("message", "")) for d in _json_lines(stderr, "exit_error")]
    text = "\n".join(fatal) or stderr.strip()
    return ResticError(_reason(code, text), _last_lines(text), code)


def snapshots_of_packs(
    repo: Repository, packs: Sequence[str], *, timeout: float = 3600
) -> frozenset[str]:
    """Full ids of the snapshots that reference a blob of one of `packs` (as the index
    describes them: for packs that are gone from the bucket, before `repair index`), or a
    tree that could not be loaded (`restic find --pack`, read-only)."""
    if not packs:
        return frozenset()
    proc = run_unchecked(repo, ["find", "--no-lock", "--json", "--pack", *packs], timeout=timeout)
    # restic prints the trees it could not load as text, on stdout before the JSON array.
    stdout = proc.stdout.decode()
    found = set(_TREE_OWNER.findall(stdout + proc.stderr.decode()))
    for line in stdout.splitlines():
        if not line.startswith("["):
            continue
        with contextlib.suppress(ValueError):
            for match in json.loads(line) or []:
                if isinstance(match, dict) and match.get("snapshot"):
                    found.add(str(match["snapshot"]))
    return frozenset(found)


def snapshots_missing_data(repo: Repository, *, timeout: float = 3600) -> frozenset[str]:
    """Short ids of the snapshots that reference a blob the index does not hold or a tree
    that cannot be read (`restic repair snapshots --dry-run`, read-only, changes nothing).

    restic 0.19 prints a block per snapshot (`snapshot 83543def of [/data] at ...`) followed
    by indented lines for what it would remove and `would save new snapshot` (or `would
    delete empty snapshot`) when the snapshot is affected."""
    proc = run_unchecked(repo, ["repair", "snapshots", "--dry-run", "--no-lock"], timeout=timeout)
    if proc.returncode != 0:
        raise _failure(proc.returncode, proc.stderr, ())
    return frozenset(parse_repair_dry_run(proc.stdout.decode()))


def parse_repair_dry_run(text: str) -> list[str]:
    """The snapshots `restic repair snapshots --dry-run` would modify or delete."""
    affected: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        match = _REPAIR_SNAPSHOT.match(line)
        if match:
            current = match.group(1)
        elif current and line.startswith(("would save", "would delete")):
            affected.append(current)
            current = None
    return affected


def repair_index(repo: Repository, *, timeout: float = 6 * 3600) -> None:
    """`restic repair index`: rebuild the index from the pack files that exist, so that
    the next backup uploads again the blobs of lost packs instead of deduplicating against
    them (exclusive lock)."""
    run(repo, ["repair", "index", "--retry-lock", "5m"], timeout=timeout)


def repair_packs(
    repo: Repository, packs: Sequence[str], workdir: str, *, timeout: float = 6 * 3600
) -> None:
    """`restic repair packs`: salvage the readable blobs of damaged packs into new packs,
    then delete the damaged ones and drop them from the index (exclusive lock). restic
    first saves a copy of each damaged pack (still encrypted) into its working directory:
    that is `workdir`, which the caller removes."""
    if packs:
        run(repo, ["repair", "packs", "--retry-lock", "5m", *packs], timeout=timeout, cwd=workdir)


def snapshots(repo: Repository, tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    args = ["snapshots", "--no-lock"] + [a for t in tags for a in ("--tag", t)]
    result: list[dict[str, Any]] = run_json(repo, args) or []
    return result


@dataclass(frozen=True)
class Unreadable:
    """A file or directory restic could not read during a backup, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class BackupSummary:
    """What restic reported for one `backup` run."""

    snapshot_id: str
    files: int
    bytes_processed: int
    bytes_added: int
    duration_seconds: float
    unreadable: tuple[Unreadable, ...] = ()
    """The first items restic could not read (exit code 3: the snapshot is incomplete)."""
    unreadable_count: int = 0
    """How many items restic could not read in all."""


def _backup_summary(output: bytes, errors: _BackupErrors | None = None) -> BackupSummary:
    """The summary message of `restic backup --json` output."""
    summary = _summary_line(output)
    return BackupSummary(
        snapshot_id=str(summary["snapshot_id"]),
        files=int(summary.get("total_files_processed", 0)),
        bytes_processed=int(summary.get("total_bytes_processed", 0)),
        bytes_added=int(summary.get("data_added", 0)),
        duration_seconds=float(summary.get("total_duration", 0.0)),
        unreadable=tuple(errors.first) if errors else (),
        unreadable_count=errors.count if errors else 0,
    )


ProgressFn = Callable[[dict[str, Any]], None]
EXIT_INCOMPLETE = 3  # restic backup: snapshot created, but some source files were not read
UNREADABLE_KEPT = 10


# restic reports an unchanged file whose blobs the index lacks (lost, then dropped by
# `repair index`) as an error and exits 3, yet reads the file again and stores it whole.
_STORED_AGAIN = "not found in the repository index; storing the file again"


class _BackupErrors:
    """Reads restic's stderr while it runs (so a flood of error lines never fills the pipe):
    counts the items it could not read, keeps the first few and the last other lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.first: list[Unreadable] = []
        self.count = 0
        self.other: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            doc = _json_line(line)
            # The scan (which only counts) reports the same items the archiver reports.
            if doc is None or doc.get("message_type") != "error" or doc.get("during") == "scan":
                self.other = [*self.other[-19:], line]
                continue
            if _STORED_AGAIN in str((doc.get("error") or {}).get("message", "")):
                continue  # read and stored again in full: nothing is missing from the snapshot
            self.count += 1
            if len(self.first) < UNREADABLE_KEPT:
                error = str((doc.get("error") or {}).get("message", ""))
                self.first.append(Unreadable(str(doc.get("item", "")), error))

    def stderr(self) -> bytes:
        self.thread.join()
        return "\n".join(self.other).encode()


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def backup_directory(
    repo: Repository,
    directory: str,
    tags: Sequence[str],
    host: str = "safehold",
    on_status: ProgressFn | None = None,
    *,
    allow_unreadable: bool = False,
) -> BackupSummary:
    """Back up a directory (stored under its absolute path) and return restic's summary.

    With `on_status`, restic's status messages (bytes and files done, totals) are passed on
    while it runs. Items restic cannot read (permission denied) make it exit 3 with an
    incomplete snapshot: that raises ResticError(UnreadableFiles) unless `allow_unreadable`,
    which returns the summary with them (`unreadable`) for the caller to judge.
    """
    # A prune holds the exclusive lock briefly: wait for it instead of failing.
    args = ["backup", directory, "--host", host, "--json", "--retry-lock", "5m"]
    args += [a for t in tags for a in ("--tag", t)]
    if on_status is None:
        args.append("--quiet")
    cmd = [restic_binary(), *repo.options, *args]
    kept: list[bytes] = []
    with subprocess.Popen(
        cmd, env=_child_env(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        errors = _BackupErrors(proc.stderr)
        for line in proc.stdout:
            if line.startswith(b'{"message_type":"status"'):
                if on_status is not None:
                    with contextlib.suppress(ValueError):
                        on_status(json.loads(line))
            else:
                kept.append(line)
        code = proc.wait()
        stderr = errors.stderr()
    if code not in (0, EXIT_INCOMPLETE):
        raise _failure(code, stderr, repo.secret_values)
    summary = _backup_summary(b"".join(kept), errors)
    if summary.unreadable_count and not allow_unreadable:
        first = summary.unreadable[0]
        raise ResticError(
            "UnreadableFiles",
            f"{summary.unreadable_count} item(s) could not be read, first {first.path}: "
            f"{first.error}",
            code,
        )
    return summary


def _summary_line(out: bytes) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.strip().startswith(b"{"):
            doc: dict[str, Any] = json.loads(line)
            if doc.get("message_type") == "summary":
                return doc
    raise ResticError("RepositoryError", "restic backup printed no summary")


def restore_directory(
    repo: Repository,
    snapshot_id: str,
    path: str,
    target: str,
    *,
    sparse: bool = False,
    verify: bool = False,
) -> None:
    """Restore the sub-tree `path` of a snapshot into `target` (files land directly in it).

    With `sparse`, restic leaves holes where a file's chunks are all zeros instead of
    writing them, so sparse files come back sparse. With `verify`, restic reads every restored
    file back and compares it with the snapshot (a mismatch fails: FileContentMismatch).
    """
    args = ["restore", f"{snapshot_id}:{path}", "--target", target]
    args += ["--sparse"] if sparse else []
    args += ["--verify"] if verify else []
    run(repo, args, timeout=6 * 3600)


def directory_node(repo: Repository, snapshot_id: str, path: str) -> dict[str, Any]:
    """restic's node (mode, times, owner) of the directory `path` inside a snapshot: what
    `restore` does not apply to its target directory. Reads one tree per path component."""
    snapshot = run_json(repo, ["cat", "snapshot", snapshot_id]) or {}
    tree, node = str(snapshot.get("tree", "")), None
    for name in [p for p in path.split("/") if p]:
        listing = run_json(repo, ["cat", "blob", tree]) or {}
        node = next((n for n in listing.get("nodes") or [] if n.get("name") == name), None)
        if node is None or node.get("type") != "dir":
            raise ResticError("SnapshotNotFound", f"{path} is not a directory of {snapshot_id}")
        tree = str(node.get("subtree", ""))
    if node is None:
        raise ResticError("SnapshotNotFound", f"{path!r} names no directory")
    found: dict[str, Any] = node
    return found


def dump_archive(
    repo: Repository, snapshot_id: str, path: str, out: BinaryIO, archive: str = "tar"
) -> None:
    """Stream the sub-tree `path` of a snapshot as a tar (or zip) archive into `out`, its
    members named relative to `path` (`index.json`, `resources/...`), not by the path the
    snapshot was taken at."""
    subtree = f"{snapshot_id}:{path}"  # restic's <snapshot>:<subfolder> names the root
    cmd = [restic_binary(), *repo.options, "dump", "--archive", archive, subtree, "/"]
    proc = subprocess.run(
        cmd, env=_child_env(repo), stdout=out, stderr=subprocess.PIPE, check=False
    )
    if proc.returncode != 0:
        raise _failure(proc.returncode, proc.stderr, repo.secret_values)


def snapshot_path(repo: Repository, snapshot_id: str) -> str:
    """The directory a single-path snapshot was taken of."""
    found = run_json(repo, ["snapshots", "--no-lock", snapshot_id]) or []
    if not found or not found[0].get("paths"):
        raise ResticError("SnapshotNotFound", f"snapshot {snapshot_id} not found")
    return str(found[0]["paths"][0])


def copy_snapshot(source: Repository, target: Repository, snapshot_id: str) -> str:
    """Copy one snapshot from `source` into `target` (both reachable with the same store
    credentials); returns its id in `target`."""
    both = Repository(
        target.url,
        {
            **source.env,
            **target.env,
            "RESTIC_FROM_REPOSITORY": source.url,
            "RESTIC_FROM_PASSWORD": source.env["RESTIC_PASSWORD"],
        },
        target.options,
    )
    run(both, ["copy", snapshot_id], timeout=6 * 3600)
    copied = snapshots(target)
    if len(copied) != 1:
        raise ResticError(
            "RepositoryError", f"copy of {snapshot_id[:8]} left {len(copied)} snapshots"
        )
    return str(copied[0]["id"])


def forget(repo: Repository, snapshot_ids: Sequence[str]) -> None:
    """Remove snapshots from the repository index (data is freed by a later prune)."""
    if snapshot_ids:
        run(repo, ["forget", *snapshot_ids], timeout=600)


# Environment contract between the operator (Job builder) and movers: the restic variables
# restic itself reads, plus extra restic options as one shell-quoted string.
# The operator gives its movers a rest: repository (the gateway) and its grant; a mover run
# by hand (tests, manual recovery) may also be given an s3: repository and keys.
_REPOSITORY_ENV = (
    "RESTIC_REPOSITORY",
    "RESTIC_PASSWORD",
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "RESTIC_CACHE_DIR",
)


def repository_from_environment(environ: Mapping[str, str]) -> Repository:
    """The repository a mover was given by its Job's environment."""
    if not environ.get("RESTIC_REPOSITORY"):
        raise ResticError("InvalidMoverEnvironment", "RESTIC_REPOSITORY is not set")
    env = {k: environ[k] for k in _REPOSITORY_ENV if k in environ and k != "RESTIC_REPOSITORY"}
    options = tuple(shlex.split(environ.get(RESTIC_OPTIONS, "")))
    return Repository(environ["RESTIC_REPOSITORY"], env, options)


# ---------------------------------------------------------------------- streams (databases)
def backup_from_command(
    repo: Repository,
    filename: str,
    command: Sequence[str],
    tags: Sequence[str],
    *,
    command_env: Mapping[str, str] | None = None,
    host: str = "safehold",
    timeout: float = 24 * 3600,
) -> BackupSummary:
    """Store the stdout of `command` as the file `filename` of a new snapshot, with no
    temporary file (`restic backup --stdin-from-command`).

    restic creates no snapshot when the command exits non-zero; that raises
    ResticError("CommandFailed") whose message ends with the command's own stderr (restic
    prefixes those lines with `subprocess <name>:`). `command_env` is added to the child's
    environment (restic passes its environment on to the command): the place for a dump
    tool's password, whose value is also redacted from every message.
    """
    extra = dict(command_env or {})
    args = ["backup", "--stdin-from-command", "--stdin-filename", filename]
    # zstd's fastest level, as `pg_dump | zstd -1` would use: a dump is re-read whole every
    # night and deduplication, not the last few percent of compression, keeps it small.
    args += ["--compression", STREAM_COMPRESSION]
    args += ["--host", host, "--json", "--quiet"]
    args += [a for t in tags for a in ("--tag", t)]
    cmd = [restic_binary(), *repo.options, *args, "--", *command]
    secrets = (*repo.secret_values, *(v for k, v in extra.items() if _is_secret_name(k)))
    try:
        proc = subprocess.run(
            cmd,
            env=_child_env(repo) | extra,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ResticError("RepositoryTimeout", f"{filename}: not stored in {timeout:.0f}s") from err
    stderr = redact(proc.stderr.decode(errors="replace").strip(), secrets)
    if proc.returncode != 0:
        if "command failed" in stderr or "subprocess " in stderr:
            lines = [ln for ln in stderr.splitlines() if not ln.startswith("{")]
            raise ResticError("CommandFailed", _last_lines("\n".join(lines), 8), proc.returncode)
        raise ResticError(_reason(proc.returncode, stderr), _last_lines(stderr), proc.returncode)
    return _backup_summary(proc.stdout)


class StdinBackup:
    """`restic backup --stdin` started ahead of its data: restic opens the repository and
    reads its index while the caller produces a small file (a dump's row counts), which
    `finish` then stores as `filename` of a new snapshot. `cancel` interrupts it (SIGINT:
    restic removes its lock) and no snapshot is made."""

    def __init__(
        self, repo: Repository, filename: str, tags: Sequence[str], *, host: str = "safehold"
    ) -> None:
        args = ["backup", "--stdin", "--stdin-filename", filename]
        args += ["--compression", STREAM_COMPRESSION, "--host", host, "--json", "--quiet"]
        args += [a for t in tags for a in ("--tag", t)]
        self.repo = repo
        self.proc = subprocess.Popen(
            [restic_binary(), *repo.options, *args],
            env=_child_env(repo),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(self, data: bytes, timeout: float = 600) -> BackupSummary:
        try:
            out, err = self.proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise ResticError("RepositoryTimeout", f"not stored in {timeout:.0f}s") from None
        except BrokenPipeError:  # restic ended before reading: its error is on stderr
            out, err = b"", self.proc.stderr.read() if self.proc.stderr else b""
            self.proc.wait()
        if self.proc.returncode != 0:
            raise _failure(self.proc.returncode, err, self.repo.secret_values)
        return _backup_summary(out)

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(w in upper for w in ("PASSWORD", "PWD", "AUTH", "SECRET", "TOKEN", "KEY"))


def dump_file(repo: Repository, snapshot_id: str, path: str, out: BinaryIO) -> None:
    """Write one file of a snapshot into `out` (a file or pipe), byte for byte."""
    cmd = [restic_binary(), *repo.options, "dump", snapshot_id, path]
    proc = subprocess.run(
        cmd, env=_child_env(repo), stdout=out, stderr=subprocess.PIPE, check=False
    )
    if proc.returncode != 0:
        raise _failure(proc.returncode, proc.stderr, repo.secret_values)


def dump_into_command(
    repo: Repository,
    snapshot_id: str,
    path: str,
    command: Sequence[str],
    *,
    command_env: Mapping[str, str] | None = None,
    timeout: float = 24 * 3600,
) -> subprocess.CompletedProcess[bytes]:
    """Pipe one file of a snapshot (`restic dump`) into the stdin of `command`.

    Returns the command's CompletedProcess (stdout, stderr, returncode) for the caller to
    judge; raises ResticError when restic itself failed (for a reason other than the command
    having stopped reading).
    `command_env` is the command's whole environment (None: inherit).
    """
    return FileDump(repo, snapshot_id, path).into(command, command_env=command_env, timeout=timeout)


# Pipes of 1 MiB (the unprivileged maximum) instead of 64 KiB: fewer wake-ups between restic
# and the tool that reads it.
_PIPE_SIZE = 1 << 20


def _widen_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


class FileDump:
    """`restic dump` of one file, started when constructed: restic's own start (the key's
    scrypt, the index) then overlaps whatever the caller prepares before it consumes the
    bytes with `into` (or gives up with `cancel`). `peek_into` shows the start of the file to
    another command first, without a second restic process."""

    def __init__(self, repo: Repository, snapshot_id: str, path: str) -> None:
        self._repo, self._path = repo, path
        self._head: list[bytes] = []  # bytes read by peek_into, still owed to into()
        # Closed by into() or cancel(), whichever ends the dump.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            [restic_binary(), *repo.options, "dump", snapshot_id, path],
            env=_child_env(repo),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self._proc.stdout is not None
        _widen_pipe(self._proc.stdout.fileno())

    def cancel(self) -> None:
        """Stop restic (SIGINT: it removes its lock) and forget the bytes; nothing once the
        dump was consumed or cancelled."""
        if self._stderr.closed:
            return
        self._stop()
        self._close()

    def _stop(self) -> bool:
        """Interrupt restic if it still runs and read what it writes until it has exited;
        True when it had to be interrupted. A restic killed by a broken pipe instead would
        leave its lock in the repository, blocking prune and check for half an hour."""
        assert self._proc.stdout is not None
        try:
            # A consumer that saw the end of the data stops while restic is still exiting.
            self._proc.wait(timeout=0.5)
            return False
        except subprocess.TimeoutExpired:
            pass
        self._proc.send_signal(signal.SIGINT)
        source, deadline = self._proc.stdout.fileno(), time.monotonic() + 30
        while time.monotonic() < deadline:
            readable, _, _ = select.select([source], [], [], 1.0)
            if readable and not os.read(source, _PIPE_SIZE):
                return True
        self._proc.kill()
        return True

    def _close(self) -> str:
        """Wait for restic; its stderr, redacted."""
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with self._stderr:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
        return redact(text, self._repo.secret_values)

    def peek_into(
        self,
        command: Sequence[str],
        *,
        command_env: Mapping[str, str] | None = None,
        limit: int = 64 << 20,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[bytes] | None:
        """Feed the start of the file to `command` until it stops reading (a reader of the
        table of contents at the head of an archive); what was read is kept for `into`.
        None when `command` still read on after `limit` bytes (it is stopped then)."""
        assert self._proc.stdout is not None
        source = self._proc.stdout.fileno()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            peeker = subprocess.Popen(
                list(command),
                env=None if command_env is None else dict(command_env),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )
            assert peeker.stdin is not None
            shown = 0
            with contextlib.suppress(BrokenPipeError):
                while peeker.poll() is None and shown <= limit:
                    chunk = os.read(source, 1 << 16)
                    if not chunk:
                        break
                    self._head.append(chunk)
                    shown += len(chunk)
                    peeker.stdin.write(chunk)
                    peeker.stdin.flush()
            with contextlib.suppress(BrokenPipeError):
                peeker.stdin.close()
            if shown > limit and peeker.poll() is None:
                peeker.kill()
                peeker.wait()
                return None
            try:
                code = peeker.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                peeker.kill()
                peeker.wait()
                return None
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(list(command), code, out.read(), err.read())

    def into(
        self,
        command: Sequence[str],
        *,
        command_env: Mapping[str, str] | None = None,
        timeout: float = 24 * 3600,
    ) -> subprocess.CompletedProcess[bytes]:
        """Feed the file to `command`'s stdin; the same contract as `dump_into_command`.
        restic's pipe is handed over, with no copy by us, unless `peek_into` already read its
        start: then that is written first and the rest is spliced across (no copy either)."""
        assert self._proc.stdout is not None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                consumer = subprocess.Popen(
                    list(command),
                    env=None if command_env is None else dict(command_env),
                    stdin=subprocess.PIPE if self._head else self._proc.stdout,
                    stdout=out,
                    stderr=err,
                )
            except OSError:
                self._proc.kill()
                self._close()
                raise
            # Past the deadline both are killed: the relay below then ends as well.
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                consumer.kill()
                self._proc.kill()

            watchdog = threading.Timer(timeout, expire)
            watchdog.start()
            try:
                if self._head:
                    self._relay(consumer)
                # Our read end stays open: a consumer that stops early must not leave
                # restic with a broken pipe (see _stop).
                consumer.wait()
            finally:
                watchdog.cancel()
            interrupted = self._stop()
            restic_stderr = self._close()
            if expired.is_set():
                raise ResticError(
                    "RepositoryTimeout", f"{self._path}: not restored in {timeout:.0f}s"
                )
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(
                list(command), consumer.returncode, out.read(), err.read()
            )
        code = self._proc.returncode
        # restic's own failure wins, unless it only lost its reader (the consumer stopped
        # first: then the consumer's stderr says why).
        if code != 0 and not interrupted:
            raise ResticError(_reason(code, restic_stderr), _last_lines(restic_stderr), code)
        return result

    def _relay(self, consumer: subprocess.Popen[bytes]) -> None:
        """The bytes `peek_into` kept, then the rest of restic's output, into `consumer`."""
        assert self._proc.stdout is not None
        assert consumer.stdin is not None
        source, sink = self._proc.stdout.fileno(), consumer.stdin.fileno()
        _widen_pipe(sink)
        with contextlib.suppress(BrokenPipeError):
            for chunk in self._head:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(sink, view) :]
            self._head = []
            while os.splice(source, sink, _PIPE_SIZE):
                pass
        with contextlib.suppress(BrokenPipeError):
            consumer.stdin.close()


@functools.cache
def version() -> str:
    """`restic version`, e.g. "restic 0.19.0"."""
    out = subprocess.run(
        [restic_binary(), "version"], capture_output=True, text=True, check=False, timeout=30
    )
    return out.stdout.split(" compiled")[0].strip()
