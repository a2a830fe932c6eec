"""BackupStorageLocation: where backups live (an S3-compatible bucket) and how to reach it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from safehold.api.base import ApiModel, Condition, DnsSubdomain
from safehold.api.durations import SyncPeriod

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


class BackupStorageLocationStatus(ApiModel):
    """Observed state of a BackupStorageLocation."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready reports the result of the last probe. RepositoryPasswordNewline (True, else
    absent) warns that the repository opens only with the password followed by a newline
    (created from a Secret that ended in one), which every run then uses."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    last_probe_time: datetime | None = None
    """When the bucket was last probed."""
    last_sync_time: datetime | None = None
    """When the catalog was last synchronised from storage."""
    repository_initialized: bool | None = None
    """Whether a restic repository exists at the location's prefix."""
