"""The one module that drives restic, the data engine for every payload byte.

Secrets reach restic only through the environment of the child process, never its
command line. Every error text is redacted before it leaves this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from safehold.storage.redact import redact
from safehold.storage.s3 import S3Settings

# restic's documented exit codes (0.17+).
EXIT_REPOSITORY_MISSING = 10
EXIT_LOCK_FAILED = 11
EXIT_WRONG_PASSWORD = 12


class ResticError(Exception):
    """restic failed; `reason` is a CamelCase status reason, the message is redacted."""

    def __init__(self, reason: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
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


_SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RESTIC_PASSWORD"}


def repository_url(settings: S3Settings, namespace: str) -> str:
    endpoint = settings.endpoint or f"https://s3.{settings.region}.amazonaws.com"
    return (
        f"s3:{endpoint.rstrip('/')}/{settings.bucket}/{settings.layout.repository_key(namespace)}"
    )


def repository_for(
    settings: S3Settings, namespace: str, password: str, cache_dir: str | None = None
) -> Repository:
    """The repository of one namespace inside a location."""
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
    return Repository(repository_url(settings, namespace), env, tuple(options))


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
        )
    except subprocess.TimeoutExpired as err:
        raise ResticError(
            "RepositoryTimeout", f"restic {args[0]} did not finish in {timeout:.0f}s"
        ) from err
    if proc.returncode != 0:
        stderr = redact(proc.stderr.decode(errors="replace").strip(), repo.secret_values)
        raise ResticError(_reason(proc.returncode, stderr), _last_lines(stderr), proc.returncode)
    return proc


def _reason(code: int, stderr: str) -> str:
    if code == EXIT_REPOSITORY_MISSING:
        return "RepositoryNotFound"
    if code == EXIT_WRONG_PASSWORD or "wrong password" in stderr:
        return "RepositoryPasswordWrong"
    if code == EXIT_LOCK_FAILED:
        return "RepositoryLocked"
    if "dial tcp" in stderr or "connection refused" in stderr or "no such host" in stderr:
        return "EndpointUnreachable"
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


def ensure_initialized(repo: Repository) -> bool:
    """Initialise the repository if missing; returns True if it was created now."""
    if is_initialized(repo):
        return False
    init(repo)
    return True


def check(repo: Repository, read_data: bool = False) -> None:
    """Verify the repository's structure (and with read_data, every pack)."""
    run(repo, ["check", *(["--read-data"] if read_data else [])], timeout=1800)


def snapshots(repo: Repository, tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    args = ["snapshots", "--no-lock"] + [a for t in tags for a in ("--tag", t)]
    result: list[dict[str, Any]] = run_json(repo, args) or []
    return result


@dataclass(frozen=True)
class BackupSummary:
    """What restic reported for one `backup` run."""

    snapshot_id: str
    files: int
    bytes_processed: int
    bytes_added: int
    duration_seconds: float


def backup_directory(
    repo: Repository, directory: str, tags: Sequence[str], host: str = "safehold"
) -> BackupSummary:
    """Back up a directory (stored under its absolute path) and return restic's summary."""
    args = ["backup", directory, "--host", host, "--json", "--quiet"]
    args += [a for t in tags for a in ("--tag", t)]
    out = run(repo, args, timeout=6 * 3600).stdout
    summary = _summary_line(out)
    return BackupSummary(
        snapshot_id=str(summary["snapshot_id"]),
        files=int(summary.get("total_files_processed", 0)),
        bytes_processed=int(summary.get("total_bytes_processed", 0)),
        bytes_added=int(summary.get("data_added", 0)),
        duration_seconds=float(summary.get("total_duration", 0.0)),
    )


def _summary_line(out: bytes) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.strip().startswith(b"{"):
            doc: dict[str, Any] = json.loads(line)
            if doc.get("message_type") == "summary":
                return doc
    raise ResticError("RepositoryError", "restic backup printed no summary")


def restore_directory(repo: Repository, snapshot_id: str, path: str, target: str) -> None:
    """Restore the sub-tree `path` of a snapshot into `target` (files land directly in it)."""
    run(repo, ["restore", f"{snapshot_id}:{path}", "--target", target], timeout=6 * 3600)


def dump_archive(
    repo: Repository, snapshot_id: str, path: str, out: BinaryIO, archive: str = "tar"
) -> None:
    """Stream the sub-tree `path` of a snapshot as a tar (or zip) archive into `out`."""
    cmd = [restic_binary(), *repo.options, "dump", "--archive", archive, snapshot_id, path]
    proc = subprocess.run(
        cmd, env=_child_env(repo), stdout=out, stderr=subprocess.PIPE, check=False
    )
    if proc.returncode != 0:
        stderr = redact(proc.stderr.decode(errors="replace").strip(), repo.secret_values)
        raise ResticError(_reason(proc.returncode, stderr), _last_lines(stderr), proc.returncode)


def forget(repo: Repository, snapshot_ids: Sequence[str]) -> None:
    """Remove snapshots from the repository index (data is freed by a later prune)."""
    if snapshot_ids:
        run(repo, ["forget", *snapshot_ids], timeout=600)
