"""The machine-readable result of a mover run: one compact JSON document.

Every verb writes one JSON object (`"ok": true|false`, on failure `reason` and `message`) as the
last line of stdout (the Job's log) and into the termination-message file
(`$SAFEHOLD_TERMINATION_LOG`, default /dev/termination-log), which Kubernetes caps at 4 KiB.
The operator reads it back with `parse_result` from the termination message, or from the log
tail when the container died before writing it (`FallbackToLogsOnError`).

The database verbs build their document with `Result`; when it is larger than 4 KiB the
termination copy drops the per-database details (snapshots stay findable by their tags) and
says `"truncated": true`. No secret is ever part of a result: messages are redacted before
they get here.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from safehold.api.errors import Failure
from safehold.contract import env as menv

MAX_TERMINATION_BYTES = 4096

# Failure reasons, most specific first in docs/databases.md.
AUTHENTICATION_FAILED = "AuthenticationFailed"
HOST_UNREACHABLE = "HostUnreachable"
TARGET_STARTING = "TargetStarting"
TARGET_NOT_READY = "TargetNotReady"
TLS_FAILED = "TlsFailed"
DATABASE_NOT_FOUND = "DatabaseNotFound"
DATABASE_EXISTS = "DatabaseExists"
INVALID_MAPPING = "InvalidDatabaseMapping"
DUMP_FAILED = "DumpFailed"
RESTORE_FAILED = "RestoreFailed"
SNAPSHOT_NOT_FOUND = "SnapshotNotFound"
INVALID_ENVIRONMENT = "InvalidMoverEnvironment"
TOOL_NOT_FOUND = "ToolNotFound"
# The database check of a drill (db-verify).
ROW_COUNT_MISMATCH = "RowCountMismatch"
PROBE_FAILED = "ProbeFailed"


def _compact(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def write_result(doc: Mapping[str, Any], termination: str | None = None) -> None:
    """Print `doc` as the last line of stdout and write the termination message (best effort).

    `termination` replaces the termination copy when the caller already shrank it to 4 KiB.
    """
    text = _compact(doc)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    message = termination if termination is not None else text
    if len(message.encode()) > MAX_TERMINATION_BYTES:
        message = _compact(
            {k: doc[k] for k in ("ok", "reason", "message") if k in doc} | {"truncated": True}
        )[:MAX_TERMINATION_BYTES]
    path = os.environ.get(menv.TERMINATION_LOG, menv.DEFAULT_TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(message)
    except OSError as err:
        print(f"cannot write the termination message to {path}: {err}", file=sys.stderr)


def parse_result(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (termination message or log tail)."""
    for raw in reversed(text.strip().splitlines()):
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


class MoverError(Failure):
    """A mover failed for a classified reason; the message is already redacted."""


@dataclass
class DatabaseResult:
    """One dumped (or restored) file."""

    name: str = ""
    file: str = ""
    snapshot: str = ""
    bytesProcessed: int = 0
    bytesAdded: int = 0
    seconds: float = 0.0
    target: str = ""  # restore: the database it went into


def _known(cls: type[Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of dataclass `cls` present in `doc` (unknown keys are ignored)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


@dataclass
class VolumeMoved:
    """The result document of `volume-backup` and `volume-restore`. A restore that left the
    PVC alone (TargetNotEmpty) is `ok` and `skipped`, with the reason: its Job completes."""

    ok: bool = False
    skipped: bool = False
    reason: str = ""
    message: str = ""
    snapshotId: str = ""
    files: int = 0
    bytes: int = 0
    bytesAdded: int = 0
    durationSeconds: float = 0.0
    sourcePath: str = ""

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> VolumeMoved:
        return cls(**_known(cls, doc))

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["durationSeconds"] = round(self.durationSeconds, 3)
        if not self.skipped:
            del doc["skipped"]
        return {k: v for k, v in doc.items() if v != ""}

    def emit(self) -> None:
        """Print to stdout and write the termination message."""
        write_result(self.to_dict())


@dataclass
class Result:
    """The result document of `db-dump` and `db-restore`."""

    verb: str  # "db-dump" | "db-restore"
    type: str = ""
    target: str = ""
    backup: str = ""
    ok: bool = False
    reason: str = ""
    message: str = ""
    serverVersion: str = ""
    toolVersion: str = ""
    databases: list[DatabaseResult] = field(default_factory=list)
    bytesProcessed: int = 0
    bytesAdded: int = 0
    durationSeconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Result:
        known = _known(cls, doc)
        items = [d for d in known.pop("databases", None) or [] if isinstance(d, Mapping)]
        known.setdefault("verb", "")
        return cls(**known, databases=[DatabaseResult(**_known(DatabaseResult, d)) for d in items])

    def add(self, item: DatabaseResult) -> None:
        self.databases.append(item)
        self.bytesProcessed += item.bytesProcessed
        self.bytesAdded += item.bytesAdded

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["durationSeconds"] = round(self.durationSeconds, 3)
        for item in doc["databases"]:
            item["seconds"] = round(item["seconds"], 3)
            if not item["target"]:
                del item["target"]
        return {k: v for k, v in doc.items() if v not in ("", [])}

    def to_json(self) -> str:
        return _compact(self.to_dict())

    def termination_json(self) -> str:
        """The document, shrunk until it fits the termination message."""
        doc = self.to_dict()
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= MAX_TERMINATION_BYTES:
            return text
        doc["truncated"] = True
        doc["databases"] = [d["name"] for d in doc.get("databases", [])]
        doc["warnings"] = doc.get("warnings", [])[:3]
        doc["message"] = str(doc.get("message", ""))[:1000]
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        while len(text.encode()) > MAX_TERMINATION_BYTES and doc["databases"]:
            doc["databases"] = doc["databases"][: len(doc["databases"]) // 2]
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return text

    def emit(self) -> None:
        """Print to stdout and write the termination message."""
        write_result(self.to_dict(), self.termination_json())


@dataclass
class ProbeOutcome:
    """One probe of a db-verify run."""

    name: str = ""
    passed: bool = False
    message: str = ""


@dataclass
class VerifyResult:
    """The result document of `db-verify` and `db-drop`.

    `ok` says that the mover did its work; whether the restored copy passed is `passed`,
    with `reason` (RowCountMismatch, ProbeFailed) and `message` when it did not. `ok` false
    (exit 1) is a mover that could not check (the server refused, a probe could not run).
    `dropped` and `leftover` name the scratch databases dropped and those that could not
    be dropped.
    """

    verb: str
    type: str = ""
    target: str = ""
    backup: str = ""
    ok: bool = False
    passed: bool = False
    reason: str = ""
    message: str = ""
    counts: str = ""
    """What the row count comparison found (one sentence)."""
    tables: int = 0
    rows: int = 0
    probes: list[ProbeOutcome] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    durationSeconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> VerifyResult:
        known = _known(cls, doc)
        items = [p for p in known.pop("probes", None) or [] if isinstance(p, Mapping)]
        known.setdefault("verb", "")
        for key in ("dropped", "leftover", "warnings"):
            known[key] = [str(v) for v in known.get(key) or [] if isinstance(v, str)]
        probes = [ProbeOutcome(**_known(ProbeOutcome, p)) for p in items]
        return cls(**known, probes=probes)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["durationSeconds"] = round(self.durationSeconds, 3)
        return {k: v for k, v in doc.items() if v not in ("", [])}

    def termination_json(self) -> str:
        """The document, shrunk until it fits the termination message."""
        doc = self.to_dict()
        text = _compact(doc)
        if len(text.encode()) <= MAX_TERMINATION_BYTES:
            return text
        doc["truncated"] = True
        doc["message"] = str(doc.get("message", ""))[:1200]
        doc["counts"] = str(doc.get("counts", ""))[:600]
        doc["warnings"] = [w[:200] for w in doc.get("warnings", [])[:2]]
        doc["probes"] = [p | {"message": p["message"][:160]} for p in doc.get("probes", [])[:8]]
        for key in ("dropped", "leftover"):
            doc[key] = [n[:80] for n in doc.get(key, [])[:8]]
        text = _compact(doc)
        while len(text.encode()) > MAX_TERMINATION_BYTES and doc["probes"]:
            doc["probes"] = doc["probes"][: len(doc["probes"]) // 2]
            text = _compact(doc)
        return text

    def emit(self) -> None:
        write_result(self.to_dict(), self.termination_json())
