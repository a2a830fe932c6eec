"""`safehold mover volume-backup|volume-restore`: move one PVC's files to or from restic.

Runs inside a mover Job. Everything comes from the environment (secrets from a Secret):

    SAFEHOLD_VOLUME_PATH    where the PVC is mounted (read-only for backups)
    SAFEHOLD_BACKUP         <namespace>/<backup>, for tags
    SAFEHOLD_PVC            <namespace>/<pvc>, for tags
    SAFEHOLD_SNAPSHOT_ID    restore: the restic snapshot
    SAFEHOLD_SNAPSHOT_PATH  restore: the directory inside it, URL-encoded (quote(path, safe=""))
                            so that nothing mistakes the value for a path; looked up when unset
    SAFEHOLD_OVERWRITE      restore: "true" to write into a non-empty volume
    SAFEHOLD_VERIFY         restore: "true" to read every restored file back (restic --verify)
    RESTIC_* / AWS_* / SAFEHOLD_RESTIC_OPTIONS   the repository (storage.restic)

A backup that could not read every file fails with UnreadableFiles (count and first paths),
although restic stored an incomplete snapshot; a restore writes sparse files sparse, then
gives the volume's root directory its recorded mode and times (and owner, as root); a
restore into a non-empty volume without SAFEHOLD_OVERWRITE is skipped, exit code 0.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import stat
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from safehold.contract import env as names
from safehold.contract.result import VolumeMoved
from safehold.storage import restic

IGNORED_IN_EMPTY_CHECK = {"lost+found"}


PROGRESS_INTERVAL = 2.0


class _ProgressPrinter:
    """Prints restic's progress as a compact JSON line at most every PROGRESS_INTERVAL seconds;
    the operator reads the newest one from the pod's log while the Job runs."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, status: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        progress = {
            "bytesDone": int(status.get("bytes_done", 0)),
            "totalBytes": int(status.get("total_bytes", 0)),
            "filesDone": int(status.get("files_done", 0)),
            "totalFiles": int(status.get("total_files", 0)),
        }
        print(json.dumps({"progress": progress}, separators=(",", ":")), flush=True)


def _fail(reason: str, message: str) -> int:
    VolumeMoved(ok=False, reason=reason, message=message).emit()
    return 1


def volume_backup(environ: Mapping[str, str] = os.environ) -> int:
    try:
        repo = restic.repository_from_environment(environ)
        path = environ[names.VOLUME_PATH]
        if not Path(path).is_dir():
            return _fail("VolumeNotMounted", f"{path} is not a directory")
        tags = [
            f"safehold.io/backup={environ.get(names.BACKUP, '')}",
            f"safehold.io/pvc={environ.get(names.PVC, '')}",
            "safehold.io/content=volume",
        ]
        summary = restic.backup_directory(
            repo, path, tags, on_status=_ProgressPrinter(), allow_unreadable=True
        )
    except KeyError as err:
        return _fail("InvalidMoverEnvironment", f"{err.args[0]} is not set")
    except restic.ResticError as err:
        return _fail(err.reason, str(err))
    moved = VolumeMoved(
        ok=True,
        snapshotId=summary.snapshot_id,
        files=summary.files,
        bytes=summary.bytes_processed,
        bytesAdded=summary.bytes_added,
        durationSeconds=summary.duration_seconds,
        sourcePath=path,
    )
    if summary.unreadable_count:
        # Never a silent partial backup: restic stored what it could read, but the PVC fails.
        moved.ok, moved.reason = False, "UnreadableFiles"
        moved.message = unreadable_message(summary, path)
    moved.emit()
    return 0 if moved.ok else 1


SHOWN_PATHS = 5


def _shown(path: str, root: str) -> str:
    relative = os.path.relpath(path, root) if path.startswith(root) else path
    text = relative if relative.isprintable() else repr(relative)
    return text if len(text) <= 200 else text[:199] + "…"


def unreadable_message(summary: restic.BackupSummary, root: str) -> str:
    """How many items could not be read, as whom, the first few and why, what to do."""
    first = ", ".join(
        f"{_shown(u.path, root)} ({u.error.rsplit(': ', 1)[-1]})"
        for u in summary.unreadable[:SHOWN_PATHS]
    )
    more = summary.unreadable_count - min(len(summary.unreadable), SHOWN_PATHS)
    return (
        f"{summary.unreadable_count} file(s) or directories could not be read as UID "
        f"{os.geteuid()} GID {os.getegid()}: {first}{f' and {more} more' if more else ''}; "
        "the snapshot is incomplete and never restored. Read the volume as its owner "
        "(volumes.moverSecurity) or use the root mover (docs/volumes.md)"
    )


def _is_empty(path: Path) -> bool:
    return not [p for p in path.iterdir() if p.name not in IGNORED_IN_EMPTY_CHECK]


def volume_restore(environ: Mapping[str, str] = os.environ) -> int:
    started = time.monotonic()
    try:
        repo = restic.repository_from_environment(environ)
        target = Path(environ[names.VOLUME_PATH])
        snapshot = environ[names.SNAPSHOT_ID]
        encoded = environ.get(names.SNAPSHOT_PATH)
        source = unquote(encoded) if encoded else restic.snapshot_path(repo, snapshot)
        if not target.is_dir():
            return _fail("VolumeNotMounted", f"{target} is not a directory")
        if environ.get(names.OVERWRITE) != "true" and not _is_empty(target):
            # A skip is not a failure: the Job completes and the result says why.
            VolumeMoved(
                ok=True,
                skipped=True,
                reason="TargetNotEmpty",
                message="the PVC already holds data; set volumes.overwriteExisting to write "
                "into it",
                durationSeconds=time.monotonic() - started,
            ).emit()
            return 0
        verify = environ.get(names.VERIFY) == "true"
        restic.restore_directory(repo, snapshot, source, str(target), sparse=True, verify=verify)
        root = restic.directory_node(repo, snapshot, source)
    except KeyError as err:
        return _fail("InvalidMoverEnvironment", f"{err.args[0]} is not set")
    except restic.ResticError as err:
        return _fail(err.reason, str(err))
    restore_root(target, root)
    files = sum(len(f) for _, _, f in os.walk(target))
    VolumeMoved(ok=True, files=files, durationSeconds=time.monotonic() - started).emit()
    return 0


# Go's os.FileMode bits restic records, as the Unix mode bits they stand for.
_GO_MODE_BITS = ((1 << 23, stat.S_ISUID), (1 << 22, stat.S_ISGID), (1 << 20, stat.S_ISVTX))


def unix_mode(go_mode: int) -> int:
    """The permission bits (with setuid, setgid, sticky) of restic's Go file mode."""
    mode = go_mode & 0o777
    for go_bit, unix_bit in _GO_MODE_BITS:
        if go_mode & go_bit:
            mode |= unix_bit
    return mode


def _nanoseconds(stamp: str) -> int:
    """An RFC 3339 time with up to nanoseconds (restic's) as nanoseconds since the epoch."""
    main, _, rest = stamp.partition(".")
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    zone = rest[len(digits) :] if rest else main[19:]
    whole = datetime.fromisoformat(main[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    return int(whole.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def restore_root(target: Path, node: Mapping[str, Any]) -> None:
    """Give the volume's root directory the owner (root mover only), mode and times it had:
    restic restores what is inside it, not the directory itself. A restricted mover that
    does not own the directory may not change it; then it keeps its own."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(target, int(node.get("uid", 0)), int(node.get("gid", 0)))
    with contextlib.suppress(OSError, ValueError):
        os.chmod(target, unix_mode(int(node["mode"])))
    with contextlib.suppress(OSError, ValueError, KeyError):
        times = (_nanoseconds(node["atime"]), _nanoseconds(node["mtime"]))
        os.utime(target, ns=times)
