"""BackupPolicy: what to back up, when, for how long, and how fresh it must be."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.base import ApiModel, Condition, DnsSubdomain
from safehold.api.content import BackupContent
from safehold.api.durations import GracePeriod, RpoTarget
from safehold.api.verification import PolicyVerification, VerificationReference


class Retention(ApiModel):
    """How many successful backups to keep, with restic's forget semantics. A backup is kept
    when any rule keeps it; the newest successful backup is always kept."""

    keep_last: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest N backups."""
    keep_hourly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest backup of each of the last N hours that have one."""
    keep_daily: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest backup of each of the last N days that have one."""
    keep_weekly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest backup of each of the last N ISO weeks that have one."""
    keep_monthly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest backup of each of the last N months that have one."""
    keep_yearly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest backup of each of the last N years that have one."""
    failed_backup_grace_period: GracePeriod | None = None
    """How long failed backups of the policy are kept for inspection before they are
    deleted; default 24h."""


class BackupPolicySpec(BackupContent):
    """Desired state of a BackupPolicy."""

    storage_location: DnsSubdomain = Field()
    """Name of the BackupStorageLocation (same namespace) that receives the backups."""
    schedule: str | None = Field(default=None, min_length=1, max_length=128)
    """Cron schedule (5 fields, or @hourly, @daily, @weekly, @monthly, @yearly); empty means
    on demand only."""
    time_zone: str = Field(
        default="UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$"
    )
    """IANA time zone the schedule and retention are evaluated in."""
    suspend: bool = False
    """Stop scheduling new runs; running ones finish."""
    concurrency_policy: Literal["Forbid", "Allow"] = "Forbid"
    """Forbid skips a run while the previous one still runs."""
    starting_deadline_seconds: int | None = Field(default=None, ge=0, le=31622400)
    """A missed run still starts if no more than this many seconds late."""
    retention: Retention | None = None
    """Which successful backups to keep; absent keeps all."""
    rpo: RpoTarget | None = None
    """Recovery point objective: Ready turns False when the newest successful backup is
    older than this."""
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    """Retain keeps backup data when the policy is deleted; Delete removes it."""
    verification: PolicyVerification | None = None
    """Scheduled restore drills (BackupVerifications) of the newest successful backup."""


class BackupReference(ApiModel):
    """A backup and when it finished."""

    name: str
    """Name of the Backup."""
    completion_time: datetime | None = None
    """When it finished."""


class BackupPolicyStatus(ApiModel):
    """Observed state of a BackupPolicy."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready (spec valid, location Ready, RPO met)."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    last_schedule_time: datetime | None = None
    """When a run was last started."""
    next_schedule_time: datetime | None = None
    """When the next run is due."""
    last_successful_backup: BackupReference | None = None
    """The newest successful backup."""
    missed_runs: int | None = None
    """Scheduled runs that never started (operator or cluster down, past the starting
    deadline, or skipped by concurrencyPolicy Forbid), counted since the policy was created."""
    rpo_met: bool | None = None
    """Whether the newest successful backup is within the RPO."""
    last_evaluated_schedule_time: datetime | None = None
    """The latest scheduled time that was started, skipped or counted as missed."""
    last_trigger: str | None = None
    """The last handled value of the safehold.io/trigger annotation."""
    last_retention_backup: str | None = None
    """The successful backup after which retention last ran."""
    last_verification: VerificationReference | None = None
    """The newest finished drill of the policy."""
    next_verification_time: datetime | None = None
    """When the next scheduled drill is due."""
    last_evaluated_verification_time: datetime | None = None
    """The latest scheduled drill time that was started, skipped or counted as missed."""
    rto_met: bool | None = None
    """Whether the last drill's measured restore time is within verification.rtoTarget."""
