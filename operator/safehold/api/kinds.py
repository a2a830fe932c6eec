"""The five custom resource kinds: their names, models, printer columns and CEL rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from safehold import GROUP, VERSION
from safehold.api.backup import BackupSpec, BackupStatus
from safehold.api.base import ApiModel
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.api.policy import BackupPolicySpec, BackupPolicyStatus
from safehold.api.restore import RestoreRequestSpec, RestoreRequestStatus
from safehold.api.verification import BackupVerificationSpec, BackupVerificationStatus


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class CelRule:
    rule: str
    message: str
    reason: str | None = None
    field_path: str | None = None


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[ApiModel]
    status: type[ApiModel]
    columns: tuple[PrinterColumn, ...]
    spec_rules: tuple[CelRule, ...] = field(default_factory=tuple)
    name_limit: int | None = None
    """A shorter limit than the API server's on the object's name (checked at admission)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the kind's collection (in a namespace or cluster-wide) or of one
        object."""
        where = f"/namespaces/{namespace}" if namespace else ""
        base = f"/apis/{GROUP}/{VERSION}{where}/{self.plural}"
        return f"{base}/{name}" if name else base


def _condition(type_: str, what: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{what}'


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
IMMUTABLE = CelRule(
    "self == oldSelf", "spec is immutable; create a new object instead", "FieldValueForbidden"
)

# A RestoreRequest or BackupVerification names its backup, or the policy whose newest it takes.
ONE_SOURCE = CelRule(
    "has(self.backupRef) != has(self.policyRef)",
    "set exactly one of backupRef or policyRef",
    "FieldValueInvalid",
)

LOCATION = KindInfo(
    kind="BackupStorageLocation",
    plural="backupstoragelocations",
    short_names=("bsl", "shloc"),
    description="An S3-compatible bucket (and prefix) that holds encrypted backups.",
    spec=BackupStorageLocationSpec,
    status=BackupStorageLocationStatus,
    columns=(
        PrinterColumn("Ready", _condition("Ready", "status")),
        PrinterColumn("Degraded", _condition("Degraded", "status")),
        PrinterColumn("Bucket", ".spec.bucket"),
        PrinterColumn("Prefix", ".spec.prefix", priority=1),
        PrinterColumn("Access", ".spec.accessMode"),
        PrinterColumn("Reason", _condition("Ready", "reason"), priority=1),
        AGE,
        PrinterColumn("Message", _condition("Ready", "message"), priority=1),
    ),
)

POLICY = KindInfo(
    kind="BackupPolicy",
    plural="backuppolicies",
    short_names=("bpol", "shpol"),
    description="What to back up, when, where to, and how long to keep it.",
    spec=BackupPolicySpec,
    status=BackupPolicyStatus,
    name_limit=63,
    columns=(
        PrinterColumn("Ready", _condition("Ready", "status")),
        PrinterColumn("Schedule", ".spec.schedule"),
        PrinterColumn("Location", ".spec.storageLocation"),
        PrinterColumn("Suspended", ".spec.suspend", "boolean", priority=1),
        PrinterColumn("Last Success", ".status.lastSuccessfulBackup.completionTime", "date"),
        AGE,
        PrinterColumn("Message", _condition("Ready", "message"), priority=1),
    ),
)

BACKUP = KindInfo(
    kind="Backup",
    plural="backups",
    short_names=("shbk",),
    description="One backup run. Created by a BackupPolicy or by hand; never changes once created.",
    spec=BackupSpec,
    status=BackupStatus,
    columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Succeeded", _condition("Succeeded", "status"), priority=1),
        PrinterColumn("Policy", ".status.policy"),
        PrinterColumn("Location", ".status.storageLocation"),
        PrinterColumn(
            "Size", ".status.size", description="Total payload size (sizeBytes in IEC units)"
        ),
        PrinterColumn("Completed", ".status.completionTime", "date", priority=1),
        AGE,
        PrinterColumn("Message", _condition("Succeeded", "message"), priority=1),
    ),
    spec_rules=(
        IMMUTABLE,
        CelRule(
            "has(self.policyRef) != has(self.storageLocation)",
            "set exactly one of policyRef or storageLocation",
            "FieldValueInvalid",
        ),
    ),
)

RESTORE = KindInfo(
    kind="RestoreRequest",
    plural="restorerequests",
    short_names=("shrs", "shrr", "restorereq"),
    description="A one-shot restore of (part of) a backup. Never changes once created.",
    spec=RestoreRequestSpec,
    status=RestoreRequestStatus,
    columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Succeeded", _condition("Succeeded", "status"), priority=1),
        PrinterColumn("Backup", ".status.backup"),
        PrinterColumn("Dry Run", ".spec.dryRun", "boolean"),
        PrinterColumn("Completed", ".status.completionTime", "date", priority=1),
        AGE,
        PrinterColumn("Message", _condition("Succeeded", "message"), priority=1),
    ),
    spec_rules=(
        IMMUTABLE,
        ONE_SOURCE,
    ),
)

VERIFICATION = KindInfo(
    kind="BackupVerification",
    plural="backupverifications",
    short_names=("shver", "bver"),
    description=(
        "One restore drill of a backup into a scratch namespace, with named checks. "
        "Never changes once created."
    ),
    spec=BackupVerificationSpec,
    status=BackupVerificationStatus,
    name_limit=63,
    columns=(
        PrinterColumn("Phase", ".status.phase", priority=1),
        PrinterColumn("Backup", ".status.backup"),
        PrinterColumn("Result", ".status.result"),
        PrinterColumn("RTO", ".status.rto", description="Measured restore time"),
        PrinterColumn("Completed", ".status.completionTime", "date", priority=1),
        AGE,
        PrinterColumn("Message", _condition("Succeeded", "message"), priority=1),
    ),
    spec_rules=(
        IMMUTABLE,
        ONE_SOURCE,
    ),
)

ALL_KINDS: tuple[KindInfo, ...] = (LOCATION, POLICY, BACKUP, RESTORE, VERIFICATION)
