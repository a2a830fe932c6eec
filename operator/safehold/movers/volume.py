"""`safehold mover volume-backup|volume-restore`: move one PVC's files to or from restic.

Runs inside a mover Job. Everything comes from the environment (secrets from a Secret):

    SAFEHOLD_VOLUME_PATH    where the PVC is mounted (read-only for backups)
    SAFEHOLD_BACKUP         <namespace>/<backup>, for tags
    SAFEHOLD_PVC            <namespace>/<pvc>, for tags
    SAFEHOLD_SNAPSHOT_ID    restore: the restic snapshot
    SAFEHOLD_SNAPSHOT_PATH  restore: the directory inside it, URL-encoded (quote(path, safe=""))
                            so that nothing mistakes the value for a path; looked up when unset
    SAFEHOLD_OVERWRITE      restore: "true" to write into a non-empty volume
    RESTIC_* / AWS_* / SAFEHOLD_RESTIC_OPTIONS   the repository (storage.restic)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
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
        summary = restic.backup_directory(repo, path, tags, on_status=_ProgressPrinter())
    except KeyError as err:
        return _fail("InvalidMoverEnvironment", f"{err.args[0]} is not set")
    except restic.ResticError as err:
        return _fail(err.reason, str(err))
    VolumeMoved(
        ok=True,
        snapshotId=summary.snapshot_id,
        files=summary.files,
        bytes=summary.bytes_processed,
        bytesAdded=summary.bytes_added,
        durationSeconds=summary.duration_seconds,
        sourcePath=path,
    ).emit()
    return 0


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
            return _fail(
                "TargetNotEmpty",
                "the PVC already holds data; set volumes.overwriteExisting to write into it",
            )
        restic.restore_directory(repo, snapshot, source, str(target))
    except KeyError as err:
        return _fail("InvalidMoverEnvironment", f"{err.args[0]} is not set")
    except restic.ResticError as err:
        return _fail(err.reason, str(err))
    files = sum(len(f) for _, _, f in os.walk(target))
    VolumeMoved(ok=True, files=files, durationSeconds=time.monotonic() - started).emit()
    return 0
