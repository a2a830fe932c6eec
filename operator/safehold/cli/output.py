"""What the CLI prints: tables, YAML/JSON, ages and sizes, describe reports.

Everything here is pure (objects in, text out) so it can be tested without a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from safehold.api.units import human_bytes

# --- primitives -------------------------------------------------------------------------


def dump(obj: Any, fmt: str) -> str:
    """The object as YAML or JSON text (ending with a newline)."""
    if fmt == "json":
        return json.dumps(obj, indent=2) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A kubectl-style table: left-aligned columns separated by three spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server (or a datetime) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's short form: 45s, 5m30s, 90m, 5h10m, 30h, 12d, 2y."""
    total = max(0, int(seconds))
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y"


def age(timestamp: Any, now: datetime) -> str:
    moment = parse_time(timestamp)
    if moment is None:
        return "<unknown>"
    return human_duration((now - moment).total_seconds())


def _when(value: Any, now: datetime) -> str:
    moment = parse_time(value)
    if moment is None:
        return "-"
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%SZ')} ({age(moment, now)} ago)"


def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


# --- lists ------------------------------------------------------------------------------


def backup_table(items: Sequence[Mapping[str, Any]], now: datetime, all_namespaces: bool) -> str:
    headers = ["NAME", "PHASE", "VERDICT", "POLICY", "LOCATION", "SIZE", "OBJECTS", "AGE"]
    rows = []
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, _status(obj)
        resources = status.get("resources") or {}
        total = resources.get("total")
        row = [
            meta["name"],
            status.get("phase") or "New",
            str((status.get("verification") or {}).get("result") or ""),
            status.get("policy") or (spec.get("policyRef") or {}).get("name") or "",
            status.get("storageLocation") or spec.get("storageLocation") or "",
            human_bytes(status.get("sizeBytes")),
            "" if total is None else str(total),
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append([meta.get("namespace", ""), *row] if all_namespaces else row)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def restore_table(items: Sequence[Mapping[str, Any]], now: datetime, all_namespaces: bool) -> str:
    headers = ["NAME", "PHASE", "BACKUP", "DRY-RUN", "CREATED", "UPDATED", "SKIPPED", "FAILED"]
    headers.append("AGE")
    rows = []
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, _status(obj)
        source = status.get("backup") or (spec.get("backupRef") or {}).get("name")
        if not source and spec.get("policyRef"):
            source = f"policy/{spec['policyRef'].get('name', '')}"
        counts = status.get("counts") or {}

        def count(key: str, counts: Mapping[str, Any] = counts) -> str:
            value = counts.get(key)
            return "" if value is None else str(value)

        row = [
            meta["name"],
            status.get("phase") or "New",
            source or "",
            "true" if spec.get("dryRun") else "false",
            count("created"),
            count("updated"),
            count("skipped"),
            count("failed"),
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append([meta.get("namespace", ""), *row] if all_namespaces else row)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


# --- describe ---------------------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def field(self, label: str, value: Any, indent: int = 0) -> None:
        if value is None or value == "":
            return
        self.lines.append(f"{' ' * indent}{label + ':':<16}{value}")

    def section(self, title: str) -> None:
        self.lines.append(f"{title}:")

    def block(self, text: str, indent: int = 2) -> None:
        for line in text.rstrip("\n").splitlines():
            self.lines.append(" " * indent + line)

    def bullets(self, title: str, items: Sequence[Any]) -> None:
        if not items:
            return
        self.section(title)
        for item in items:
            self.lines.append(f"  - {' '.join(str(item).split())}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _conditions(report: _Report, status: Mapping[str, Any], now: datetime) -> None:
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if not conditions:
        report.field("Conditions", "<none>")
        return
    report.section("Conditions")
    rows = [
        [
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            age(c.get("lastTransitionTime"), now),
            " ".join(str(c.get("message", "")).split()),
        ]
        for c in conditions
    ]
    report.block(table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows))


def _times(report: _Report, status: Mapping[str, Any], now: datetime) -> None:
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime"))
    report.field("Started", _when(start, now) if start else "-")
    report.field("Completed", _when(end, now) if end else "-")
    if start and end:
        report.field("Duration", human_duration((end - start).total_seconds()))
    elif start:
        report.field("Running for", human_duration((now - start).total_seconds()))


def _header(report: _Report, obj: Mapping[str, Any], kind: str, now: datetime) -> None:
    meta = obj["metadata"]
    report.field("Name", meta["name"])
    report.field("Namespace", meta.get("namespace"))
    report.field("Kind", kind)
    report.field("Created", _when(meta.get("creationTimestamp"), now))
    report.field("Phase", _status(obj).get("phase") or "New (not picked up by the operator yet)")


def _resources_section(report: _Report, status: Mapping[str, Any]) -> None:
    resources = status.get("resources") or {}
    if not resources:
        return
    summary = f"{resources.get('total', 0)} objects"
    if resources.get("snapshotId"):
        summary += f" (snapshot {str(resources['snapshotId'])[:8]})"
    report.field("Resources", summary)
    by_kind = resources.get("byKind") or {}
    if by_kind:
        rows = [[kind, str(count)] for kind, count in sorted(by_kind.items())]
        report.block(table(["RESOURCE", "COUNT"], rows))


def _volumes_section(report: _Report, status: Mapping[str, Any]) -> None:
    volumes = [v for v in status.get("volumes") or [] if isinstance(v, dict)]
    if not volumes:
        return
    report.section("Volumes")
    rows = [
        [
            f"{v.get('namespace', '')}/{v.get('pvc', '')}",
            str(v.get("mode", "")),
            str(v.get("result", "")),
            human_bytes(v.get("bytes")),
            human_bytes(v.get("bytesAdded")),
            human_duration(v["durationSeconds"]) if v.get("durationSeconds") else "",
            " ".join(str(v.get("message") or "").split()),
        ]
        for v in volumes
    ]
    headers = ["PVC", "MODE", "RESULT", "SIZE", "ADDED", "DURATION", "MESSAGE"]
    report.block(table(headers, rows))


def _databases_section(report: _Report, status: Mapping[str, Any]) -> None:
    databases = [d for d in status.get("databases") or [] if isinstance(d, dict)]
    if not databases:
        return
    report.section("Databases")
    rows = [
        [
            str(d.get("target", "")),
            str(d.get("type", "")),
            str(d.get("result", "")),
            ",".join(d.get("databases") or []),
            human_bytes(d.get("bytes")),
            human_duration(d["durationSeconds"]) if d.get("durationSeconds") else "",
            " ".join(str(d.get("message") or "").split()),
        ]
        for d in databases
    ]
    headers = ["TARGET", "TYPE", "RESULT", "DATABASES", "SIZE", "DURATION", "MESSAGE"]
    report.block(table(headers, rows))


def describe_backup(obj: Mapping[str, Any], now: datetime) -> str:
    """A readable report of a Backup's spec source and status."""
    spec, status = obj.get("spec") or {}, _status(obj)
    report = _Report()
    _header(report, obj, "Backup", now)
    policy = status.get("policy") or (spec.get("policyRef") or {}).get("name")
    report.field("Policy", policy or "- (inline spec)")
    report.field("Location", status.get("storageLocation") or spec.get("storageLocation") or "-")
    report.field("Storage path", status.get("storagePath"))
    report.field("TTL", spec.get("ttl"))
    report.field("Expires", _when(status.get("expiresAt"), now) if status.get("expiresAt") else "")
    _times(report, status, now)
    report.field("Size", human_bytes(status.get("sizeBytes")))
    progress = status.get("progress") or {}
    if progress and not status.get("completionTime"):
        report.field(
            "Progress",
            f"{progress.get('itemsDone', 0)}/{progress.get('itemsTotal', 0)} items, "
            f"{human_bytes(progress.get('bytesDone', 0))}",
        )
    _verification(report, status, now)
    _conditions(report, status, now)

    _resources_section(report, status)
    _volumes_section(report, status)
    _databases_section(report, status)
    report.bullets("Errors", status.get("errors") or [])
    report.bullets("Warnings", status.get("warnings") or [])
    return report.text()


def _verification(report: _Report, status: Mapping[str, Any], now: datetime) -> None:
    """The last verdict of a drill or repository check: what, when, by which, and why."""
    verdict = status.get("verification")
    if not isinstance(verdict, dict) or not verdict.get("result"):
        report.field("Verification", "- (never drilled or found damaged)")
        return
    drill = verdict.get("verification")
    by = f"drill {drill}" if drill else "the location's repository check"
    report.field("Verification", f"{verdict['result']} by {by}, {_when(verdict.get('time'), now)}")
    report.field("Verdict", " ".join(str(verdict.get("message") or "").split()))


def _stages_section(report: _Report, status: Mapping[str, Any]) -> None:
    stages = [s for s in status.get("stages") or [] if isinstance(s, dict)]
    if not stages:
        return
    report.section("Stages")
    rows = []
    for stage in stages:
        counts = stage.get("counts") or {}
        rows.append(
            [
                str(stage.get("name", "")),
                str(stage.get("items", 0)),
                str(stage.get("phase", "")),
                *(str(counts.get(k, 0)) for k in ("created", "updated", "skipped", "failed")),
            ]
        )
    headers = ["STAGE", "ITEMS", "PHASE", "CREATED", "UPDATED", "SKIPPED", "FAILED"]
    report.block(table(headers, rows))


def describe_restore(obj: Mapping[str, Any], now: datetime) -> str:
    """A readable report of a RestoreRequest's spec and status."""
    spec, status = obj.get("spec") or {}, _status(obj)
    report = _Report()
    _header(report, obj, "RestoreRequest", now)
    if spec.get("backupRef"):
        report.field("From backup", spec["backupRef"].get("name"))
    if spec.get("policyRef"):
        report.field("From policy", f"{spec['policyRef'].get('name')} (newest successful backup)")
    report.field("Backup", status.get("backup") or "-")
    report.field("Dry run", "yes" if spec.get("dryRun") else "no")
    report.field("On existing", spec.get("existingResourcePolicy") or "skip")
    mapping = spec.get("namespaceMapping") or {}
    if mapping:
        report.field("Namespaces", ", ".join(f"{a} -> {b}" for a, b in sorted(mapping.items())))
    if spec.get("includedNamespaces"):
        report.field("Only from", ", ".join(spec["includedNamespaces"]))
    report.field("Results path", status.get("resultsPath"))
    _times(report, status, now)
    counts = status.get("counts")
    if isinstance(counts, dict):
        report.section("Objects")
        for key in ("created", "updated", "skipped", "failed"):
            report.field(key.capitalize(), str(counts.get(key, 0)), indent=2)
    _stages_section(report, status)
    _conditions(report, status, now)
    _volumes_section(report, status)
    _databases_section(report, status)
    report.bullets("Errors", status.get("errors") or [])
    report.bullets("Warnings", status.get("warnings") or [])
    return report.text()


# --- restore drills (BackupVerification) ------------------------------------------------


def _seconds(value: Any) -> str:
    """A measured duration: tenths below 10 s (checks are often quick), else kubectl's form."""
    if not isinstance(value, int | float):
        return ""
    return f"{value:.1f}s" if value < 10 else human_duration(value)


def _checks(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in status.get("checks") or [] if isinstance(c, dict)]


def failed_checks(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks of a drill that failed, in the order they ran."""
    return [c for c in _checks(_status(obj)) if c.get("result") == "Failed"]


def _drill_source(obj: Mapping[str, Any]) -> str:
    spec, status = obj.get("spec") or {}, _status(obj)
    source = status.get("backup") or (spec.get("backupRef") or {}).get("name")
    if not source and spec.get("policyRef"):
        source = f"policy/{spec['policyRef'].get('name', '')}"
    return str(source or "")


def _rto(status: Mapping[str, Any]) -> str:
    return str(status.get("rto") or _seconds(status.get("restoreSeconds")))


def verification_table(
    items: Sequence[Mapping[str, Any]], now: datetime, all_namespaces: bool
) -> str:
    headers = ["NAME", "BACKUP", "RESULT", "RTO", "FAILED-CHECK", "AGE"]
    rows = []
    for obj in items:
        meta, status = obj["metadata"], _status(obj)
        row = [
            meta["name"],
            _drill_source(obj),
            status.get("result") or status.get("phase") or "New",
            _rto(status),
            ",".join(str(c.get("name", "")) for c in failed_checks(obj)),
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append([meta.get("namespace", ""), *row] if all_namespaces else row)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def _scratch(status: Mapping[str, Any], now: datetime) -> str:
    """The scratch namespaces and whether they are gone."""
    name = ", ".join(str(n) for n in status.get("scratchNamespaces") or [])
    if not name:
        return "-"
    if status.get("scratchRemoved") is True:
        return f"{name} (removed)"
    if status.get("keepUntil"):
        moment = parse_time(status["keepUntil"])
        until = moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else status["keepUntil"]
        left = f", {human_duration((moment - now).total_seconds())} left" if moment else ""
        return f"{name} (kept for inspection until {until}{left})"
    if status.get("completionTime"):
        return f"{name} (NOT removed yet: the operator retries)"
    return f"{name} (in use)"


def _checks_section(report: _Report, status: Mapping[str, Any]) -> None:
    checks = _checks(status)
    if not checks:
        report.field("Checks", "<none yet>")
        return
    report.section("Checks")
    rows = [
        [
            str(c.get("name", "")),
            str(c.get("result", "")),
            str(c.get("reason") or ""),
            _seconds(c.get("durationSeconds")),
            " ".join(str(c.get("message") or "").split()),
        ]
        for c in checks
    ]
    report.block(table(["CHECK", "RESULT", "REASON", "DURATION", "MESSAGE"], rows))


def describe_verification(obj: Mapping[str, Any], now: datetime) -> str:
    """A readable report of a restore drill: source, measurements, scratch, every check."""
    spec, status = obj.get("spec") or {}, _status(obj)
    report = _Report()
    _header(report, obj, "BackupVerification", now)
    failed = ", ".join(str(c.get("name")) for c in failed_checks(obj))
    result = status.get("result")
    report.field("Result", f"{result} (failed: {failed})" if failed and result else result)
    if spec.get("backupRef"):
        report.field("From backup", spec["backupRef"].get("name"))
    if spec.get("policyRef"):
        report.field("From policy", f"{spec['policyRef'].get('name')} (newest good backup)")
    report.field("Backup", status.get("backup") or "-")
    report.field("Policy", status.get("policy"))
    _times(report, status, now)
    if status.get("restoreSeconds") is not None or status.get("rto"):
        report.field("RTO", f"{_rto(status)} (measured restore time)")
    if isinstance(status.get("backupAgeSeconds"), int | float):
        age_text = human_duration(status["backupAgeSeconds"])
        report.field("RPO", f"{age_text} (age of the backup at the drill)")
    report.field("Scratch", _scratch(status, now))
    report.field("Scratch DBs", ", ".join(status.get("scratchDatabases") or []))
    if status.get("dataSubset"):
        report.field("Data read", f"{status['dataSubset']} of the stored data (repository check)")
    report.field("Timeout", spec.get("timeout") or "1h")
    report.field("Keep if failed", spec.get("keepOnFailure") or "no (removed at once)")
    _conditions(report, status, now)
    _checks_section(report, status)
    report.bullets("Errors", status.get("errors") or [])
    report.bullets("Warnings", status.get("warnings") or [])
    return report.text()


def drill_summary(obj: Mapping[str, Any], succeeded: bool) -> list[str]:
    """What `verify create --wait` adds after the outcome: every failed check, or the
    measured RTO and RPO of a passed drill."""
    status = _status(obj)
    lines = [
        f"check {c.get('name')} failed"
        + (f" ({c['reason']})" if c.get("reason") else "")
        + (f": {' '.join(str(c['message']).split())}" if c.get("message") else "")
        for c in failed_checks(obj)
    ]
    measured = []
    if succeeded and _rto(status):
        measured.append(f"RTO {_rto(status)} (restore time)")
    if succeeded and isinstance(status.get("backupAgeSeconds"), int | float):
        measured.append(f"RPO {human_duration(status['backupAgeSeconds'])} (backup age)")
    return lines + ([", ".join(measured)] if measured else [])


def now_utc() -> datetime:
    return datetime.now(UTC)
