"""What a backup takes: shared by BackupPolicy (as a template) and Backup (inline)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from safehold.api.base import (
    ApiModel,
    DnsLabel,
    DnsSubdomain,
    LabelSelector,
    ResourceRequirements,
)
from safehold.api.durations import MoverTimeout, SnapshotTimeout

VolumeMode = Literal["snapshot", "snapshot+move", "filesystem", "none"]
DatabaseType = Literal["postgresql", "mysql", "redis"]


class Selection(ApiModel):
    """Which Kubernetes objects a backup exports."""

    namespaces: list[DnsLabel] | None = None
    """Namespaces to back up. Empty means the backup's own namespace. Only resources in the
    operator's namespace may name other namespaces."""
    namespace_selector: LabelSelector | None = None
    """Select namespaces by label instead of by name (operator namespace only)."""
    label_selector: LabelSelector | None = None
    """Only objects carrying these labels."""
    included_resources: list[str] = Field(default_factory=lambda: ["*"])
    """Resource types as resource.group (e.g. deployments.apps, configmaps); * means all."""
    excluded_resources: list[str] = Field(default_factory=list)
    """Resource types never exported, as resource.group."""
    include_cluster_resources: bool = False
    """Also export the cluster-scoped objects the selection depends on (CRDs, ClusterRoles and
    bindings, StorageClasses, PriorityClasses, the Namespace objects). Operator namespace only."""


class VolumeRule(ApiModel):
    """How the PersistentVolumeClaims matching a selector are protected."""

    pvc_selector: LabelSelector | None = None
    """PVCs this rule applies to; empty matches every PVC not matched by an earlier rule."""
    mode: VolumeMode = "filesystem"
    """snapshot: CSI VolumeSnapshot kept in the cluster; snapshot+move: snapshot copied into
    the repository; filesystem: live files copied into the repository; none: skip."""
    volume_snapshot_class_name: DnsSubdomain | None = None
    """VolumeSnapshotClass for the snapshot modes; empty uses the cluster default."""


class VolumeSecurity(ApiModel):
    """Identity the mover uses to read volume data."""

    run_as_user: int | None = Field(default=None, ge=1)
    """UID of the mover; default: taken from the pod that uses the PVC."""
    run_as_group: int | None = Field(default=None, ge=0)
    """GID of the mover; default: taken from the pod that uses the PVC."""
    fs_group: int | None = Field(default=None, ge=0)
    """Supplementary group of the mover."""


class Volumes(ApiModel):
    """Volume data protection settings."""

    rules: list[VolumeRule] = Field(default_factory=lambda: [VolumeRule()])
    """Rules evaluated in order; the first whose selector matches a PVC decides its mode."""
    parallelism: int = Field(default=2, ge=1, le=64)
    """How many PVCs are moved at the same time."""
    mover_resources: ResourceRequirements | None = None
    """Requests and limits of mover pods."""
    mover_security: VolumeSecurity | None = None
    """Override of the identity mover pods use."""
    snapshot_timeout: SnapshotTimeout = "10m"
    """How long a VolumeSnapshot may take to become ready before the PVC fails."""
    mover_timeout: MoverTimeout = "6h"
    """How long one mover Job may run before it is stopped and the PVC fails."""


class ServiceReference(ApiModel):
    """A Service in front of a database."""

    name: DnsLabel
    """Service name."""
    namespace: DnsLabel | None = None
    """Service namespace; default: the backup's namespace."""


class DatabaseTls(ApiModel):
    """TLS settings for a database connection."""

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    """TLS mode, with PostgreSQL's meaning."""
    ca_secret: DnsSubdomain | None = None
    """Secret with key ca.crt trusted for the server certificate."""


class DatabaseCredentials(ApiModel):
    """Secret with the credentials a dump connects with."""

    name: DnsSubdomain
    """Name of the Secret."""
    username_key: str = "username"
    """Key of the user name. Redis needs no user: a Secret without the key username means
    Redis' default user (password only). Any other key named here must exist."""
    password_key: str = "password"
    """Key of the password."""


class PostgresOptions(ApiModel):
    """PostgreSQL-specific dump options."""

    include_globals: bool = True
    """Also dump roles and tablespaces (pg_dumpall --globals-only)."""
    globals_with_passwords: bool = False
    """Include role password hashes in the globals dump."""


class MysqlOptions(ApiModel):
    """MySQL/MariaDB-specific dump options."""

    routines: bool = True
    """Dump stored procedures and functions."""
    events: bool = True
    """Dump scheduled events."""
    triggers: bool = True
    """Dump triggers."""
    include_accounts: bool = False
    """Also dump user accounts with their grants and password hashes (MariaDB's
    mariadb-dump --system=users) as mysql-system/users.sql."""


class DatabaseTarget(ApiModel):
    """A database server to dump consistently."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.host) != has(self.service)",
                    "message": "set exactly one of host or service",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    name: DnsLabel
    """Name of this target, unique in the list; used in status and storage paths."""
    type: DatabaseType
    """Database engine: postgresql, mysql (MariaDB included) or redis."""
    host: str | None = Field(default=None, max_length=253)
    """Host name or address; exclusive with service."""
    service: ServiceReference | None = None
    """Service in front of the server; exclusive with host."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port; default: the engine's standard port."""
    tls: DatabaseTls | None = None
    """TLS settings."""
    credentials_secret: DatabaseCredentials | None = None
    """Credentials; Redis without AUTH needs none."""
    databases: list[str] | None = None
    """Databases to dump; empty means all (except templates and system databases)."""
    postgresql: PostgresOptions | None = None
    """PostgreSQL options."""
    mysql: MysqlOptions | None = None
    """MySQL/MariaDB options."""


class Hook(ApiModel):
    """A command executed in running pods before or after a backup."""

    name: DnsLabel
    """Name of the hook, used in status."""
    pod_selector: LabelSelector
    """Pods (in the backup's namespaces) the command runs in."""
    container: DnsLabel | None = None
    """Container; default: the pod's first container."""
    command: list[str] = Field(min_length=1)
    """Command and arguments, executed without a shell."""
    timeout_seconds: int = Field(default=30, ge=1, le=3600)
    """How long the command may run."""
    on_error: Literal["Fail", "Continue"] = "Fail"
    """Fail the backup, or record a warning and go on."""


class Hooks(ApiModel):
    """Commands around a backup for application consistency."""

    pre: list[Hook] = Field(default_factory=list)
    """Run before anything is taken."""
    post: list[Hook] = Field(default_factory=list)
    """Run after everything is taken, also when the backup failed."""


class BackupContent(ApiModel):
    """What to back up and where to."""

    storage_location: DnsSubdomain | None = None
    """Name of the BackupStorageLocation (same namespace) that receives the backup."""
    selection: Selection = Field(default_factory=Selection)
    """Which Kubernetes objects are exported."""
    volumes: Volumes | None = None
    """Volume data protection; absent means PVC data is not backed up."""
    databases: list[DatabaseTarget] = Field(default_factory=list)
    """Databases dumped consistently."""
    hooks: Hooks | None = None
    """Commands run in pods around the backup."""
