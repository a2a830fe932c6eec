"""BackupStorageLocation: where backups live (an S3-compatible bucket) and how to reach it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from safehold.api.base import ApiModel, Condition, DnsSubdomain
from safehold.api.durations import RepositoryCheckInterval, SyncPeriod

AccessMode = Literal["ReadWrite", "ReadOnly"]


class S3CredentialsSecret(ApiModel):
    """A Secret holding the S3 access key pair."""

    name: DnsSubdomain
    """Name of the Secret in the location's namespace."""
    access_key_id_key: str = "accessKeyId"
    """Key of the access key id inside the Secret."""
    secret_access_key_key: str = "secretAccessKey"
    """Key of the secret access key inside the Secret."""


class RepositoryPasswordSecret(ApiModel):
    """A Secret holding the repository password that encrypts every byte Safehold stores."""

    name: DnsSubdomain
    """Name of the Secret in the location's namespace."""
    key: str = "password"
    """Key of the password inside the Secret. One trailing newline (LF or CRLF) is not part
    of the password, as `kubectl create secret --from-file` keeps it."""


_BUCKET_RULE: JsonDict = {
    "rule": "!self.contains('..') && !self.contains('.-') && !self.contains('-.')",
    "message": "not a valid S3 bucket name",
    "reason": "FieldValueInvalid",
}
_PREFIX_RULE: JsonDict = {
    "rule": "!self.split('/').exists(p, p == '.' || p == '..')",
    "message": "the prefix may not contain . or .. segments",
    "reason": "FieldValueInvalid",
}


class RepositoryCheck(ApiModel):
    """The scheduled integrity check of the location's repositories (`restic check`).

    A check that finds data missing or damaged turns the location's Degraded condition True,
    marks the Backups whose snapshots lost data Corrupt and (ReadWrite locations only)
    repairs the repository's index, so that the next backup of the same data uploads it
    again. It never runs while a prune of the location or a backup to it runs."""

    enabled: bool = True
    """Run the check. Disabling it keeps the last result in status."""
    interval: RepositoryCheckInterval = "24h"
    """Time from one check to the next (the first: from the location's creation)."""
    read_data_runs: int = Field(default=10, ge=0, le=1000)
    """Each check also reads and verifies 1/N of the stored pack files (restic
    --read-data-subset=k/N, k advancing with every check), so that N successive checks read
    all data once; 1 reads everything every time; 0 checks only the structure (every blob a
    snapshot needs is indexed and its pack file exists), reading no data."""


class BackupStorageLocationSpec(ApiModel):
    """Desired state of a BackupStorageLocation."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/.*)?$")
    """S3 endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or http://minio.minio:9000.
    Empty means AWS S3 for the region."""
    bucket: str = Field(
        min_length=3,
        max_length=63,
        # S3's bucket naming rules: lower case, digits, dots and hyphens; no `..`, `.-`, `-.`.
        pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
        json_schema_extra={"x-kubernetes-validations": [_BUCKET_RULE]},
    )
    """Bucket name. The bucket must exist; Safehold never creates or deletes buckets."""
    prefix: str = Field(
        default="",
        max_length=512,
        pattern=r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
        json_schema_extra={"x-kubernetes-validations": [_PREFIX_RULE]},
    )
    """Key prefix inside the bucket (no leading or trailing slash, no `.` or `..` segments),
    so one bucket can hold several locations."""
    region: str = Field(default="us-east-1", min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")
    """Region of the bucket."""
    force_path_style: bool = False
    """Address the bucket as endpoint/bucket instead of bucket.endpoint (MinIO, Ceph RGW,
    SeaweedFS and most on-premises stores need this)."""
    ca_bundle: str | None = Field(default=None, max_length=262144)
    """PEM-encoded CA certificates trusted for the endpoint's TLS certificate."""
    insecure_skip_tls_verify: bool = False
    """Skip TLS certificate verification. For tests only; never in production."""
    credentials_secret: S3CredentialsSecret
    """Secret with the S3 access key pair."""
    repository_password_secret: RepositoryPasswordSecret
    """Secret with the repository password. Encryption is always on; losing this password
    means losing every backup in the location."""
    access_mode: AccessMode = "ReadWrite"
    """ReadOnly locations are only read from: for disaster recovery into a new cluster."""
    sync_period: SyncPeriod = "5m"
    """How often the location is probed again and the catalog re-synchronised."""
    repository_check: RepositoryCheck = Field(default_factory=RepositoryCheck)
    """Scheduled integrity checks of the location's repositories (on by default, daily)."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if any(bad in value for bad in ("..", ".-", "-.")):
            raise ValueError(f"{value!r} is not a valid S3 bucket name")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"prefix {value!r} has a . or .. segment")
        return value


RepositoryCheckOutcome = Literal["Passed", "Damaged", "Failed"]


class RepositoryCheckStatus(ApiModel):
    """The last scheduled repository check of the location."""

    last_check_time: datetime | None = None
    """When the last check finished."""
    last_passed_time: datetime | None = None
    """When a check last found no errors."""
    result: RepositoryCheckOutcome | None = None
    """Passed (no errors), Damaged (data missing or damaged: see the Degraded condition) or
    Failed (the check could not run, e.g. the store did not answer; retried next interval)."""
    reason: str | None = None
    """CheckPassed, RepositoryDamaged, or why the check could not run."""
    message: str = ""
    """What restic found, naming each repository."""
    read_data_subset: str | None = None
    """The part of the pack files the last check read (k/N), if any."""
    runs: int = 0
    """Checks completed so far (a check that could not run does not count): the next check
    reads subset runs mod readDataRuns + 1."""
    duration_seconds: float | None = None
    """How long the last check took."""
    corrupt_backups: list[str] = Field(default_factory=list)
    """Backups the last check found damaged (marked Corrupt)."""


class BackupStorageLocationStatus(ApiModel):
    """Observed state of a BackupStorageLocation."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready reports the result of the last probe. Degraded (True/False after the first
    repository check) says whether the last repository check found data missing or damaged;
    a Degraded location stays Ready, so that new backups upload the lost data again.
    RepositoryPasswordNewline (True, else absent) warns that the repository opens only with
    the password followed by a newline (created from a Secret that ended in one), which every
    run then uses."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    last_probe_time: datetime | None = None
    """When the bucket was last probed."""
    last_sync_time: datetime | None = None
    """When the catalog was last synchronised from storage."""
    repository_initialized: bool | None = None
    """Whether a restic repository exists at the location's prefix."""
    repository_check: RepositoryCheckStatus | None = None
    """The last scheduled repository check."""
