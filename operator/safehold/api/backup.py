"""Backup: one run, created by a policy or by hand. Its spec never changes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.base import ApiModel, Condition, LocalObjectReference
from safehold.api.content import BackupContent
from safehold.api.durations import TimeToLive
from safehold.api.units import human_bytes
from safehold.api.verification import BackupVerificationState

BackupPhase = Literal["New", "Running", "Succeeded", "PartiallyFailed", "Failed"]
ItemResult = Literal["Succeeded", "Failed", "Skipped"]


class BackupSpec(BackupContent):
    """Desired state of a Backup: either policyRef, or an inline storageLocation and
    selection."""

    policy_ref: LocalObjectReference | None = None
    """Take the content and location from this BackupPolicy (same namespace)."""
    ttl: TimeToLive | None = None
    """Delete the backup (and its data) this long after it completes; empty: retention of
    the policy decides."""


class Progress(ApiModel):
    """How far a running backup is."""

    items_done: int = 0
    """Items (objects, volumes, databases) finished."""
    items_total: int = 0
    """Items planned."""
    bytes_done: int = 0
    """Payload bytes processed so far."""


class VolumeResult(ApiModel):
    """Result of one PVC."""

    namespace: str
    """Namespace of the PVC."""
    pvc: str
    """Name of the PVC."""
    mode: str
    """How it was protected."""
    result: ItemResult
    """Outcome."""
    snapshot_id: str | None = None
    """restic snapshot id, for modes that move data. On a Failed PVC (UnreadableFiles): the
    incomplete snapshot restic stored, never restored, deleted with the backup."""
    repository: str | None = None
    """Key (below the location's prefix) of the restic repository holding the snapshot: the
    source namespace's own repository for its data (absent in backups made before Safehold
    recorded it: the backup's namespace's repository)."""
    volume_snapshot: str | None = None
    """VolumeSnapshot name, for snapshot mode."""
    files: int | None = None
    """Files processed."""
    bytes: int | None = None
    """Bytes read: the files' apparent sizes, so a sparse file counts at its full length
    (restic reads its holes as zeros; they take almost no room in the repository)."""
    bytes_added: int | None = None
    """New data after deduplication, before compression (restic's data_added): the repository
    grows by less when the data compresses."""
    duration_seconds: float | None = None
    """Duration of the move."""
    message: str | None = None
    """Why it failed or was skipped."""
    capacity: str | None = None
    """Requested size of the PVC, used when a restore has to create it."""
    storage_class: str | None = None
    """StorageClass of the PVC."""
    access_modes: list[str] = Field(default_factory=list)
    """Access modes of the PVC."""
    source_path: str | None = None
    """Directory the data was read from inside the snapshot."""
    run_as_user: int | None = None
    """UID the mover read the data as (owner of the data); 0 when the root mover read it,
    which a restore then needs too."""
    run_as_group: int | None = None
    """GID the mover read the data as."""


class DumpedFile(ApiModel):
    """One file of a database target in the repository (each is its own restic snapshot)."""

    path: str
    """Path inside the snapshot, e.g. `postgresql/app.dump`."""
    snapshot: str
    """restic snapshot id holding it."""
    bytes: int | None = None
    """Size of the file."""


class DatabaseResult(ApiModel):
    """Result of one database target."""

    target: str
    """Name of the target in the spec."""
    type: str
    """Engine."""
    result: ItemResult
    """Outcome."""
    databases: list[str] = Field(default_factory=list)
    """Databases dumped."""
    snapshot_id: str | None = None
    """restic snapshot id of the first dump file."""
    snapshots: list[str] = Field(default_factory=list)
    """restic snapshot ids of every dump file (one per database, plus globals)."""
    files: list[DumpedFile] = Field(default_factory=list)
    """Every dump file and its snapshot, so that a restore reads them without listing the
    repository first (absent in backups made before Safehold recorded it)."""
    bytes: int | None = None
    """Size of the dumps."""
    server_version: str | None = None
    """Version the server reported."""
    tool_version: str | None = None
    """Version of the dump tool."""
    duration_seconds: float | None = None
    """Duration of the dump."""
    message: str | None = None
    """Why it failed or was skipped, as Reason: text."""
    warnings: list[str] = Field(default_factory=list)
    """What the mover noted without failing (a statement of the stored accounts that failed,
    accounts left as they were); also in the run's warnings, named by target."""


class ResourceSummary(ApiModel):
    """Kubernetes objects exported."""

    total: int = 0
    """Objects exported."""
    by_kind: dict[str, int] = Field(default_factory=dict)
    """Objects per resource (resource.group)."""
    snapshot_id: str | None = None
    """restic snapshot id of the export."""
    sha256: str | None = None
    """Checksum of the export."""


class BackupStatus(ApiModel):
    """Observed state of a Backup."""

    phase: BackupPhase | None = None
    """Derived from the conditions: New, Running, Succeeded, PartiallyFailed or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Succeeded (Unknown while running) and Complete (True when finished either way)."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    storage_location: str | None = None
    """Location the backup was written to."""
    policy: str | None = None
    """Policy the backup belongs to."""
    start_time: datetime | None = None
    """When the run started."""
    completion_time: datetime | None = None
    """When the run finished."""
    expires_at: datetime | None = None
    """When the backup is due for deletion, if known."""
    progress: Progress | None = None
    """Progress while running."""
    resources: ResourceSummary | None = None
    """Exported objects."""
    volumes: list[VolumeResult] = Field(default_factory=list)
    """Per-PVC results."""
    databases: list[DatabaseResult] = Field(default_factory=list)
    """Per-database results."""
    size_bytes: int | None = None
    """Total payload size, before deduplication and compression: the exported objects, the
    volume files at their apparent size (a sparse file at its full length, not the blocks it
    takes on disk) and the database dumps."""
    size: str | None = None
    """sizeBytes in IEC units (e.g. 2.2GiB), for kubectl's Size column; written with it."""
    storage_path: str | None = None
    """Catalog path of the manifest in the bucket."""
    run_uid: str | None = None
    """UID of the run whose data this Backup stands for (its own; for a Backup re-discovered
    from storage, the original's). Deleting it deletes data only when the catalog entry of its
    name carries this UID."""
    errors: list[str] = Field(default_factory=list)
    """Errors, each naming the item it concerns."""
    warnings: list[str] = Field(default_factory=list)
    """Warnings, each naming the item it concerns."""
    verification: BackupVerificationState | None = None
    """The last verdict of a drill or repository check on this backup: Verified,
    VerificationFailed or Corrupt."""

    def to_wire(self) -> dict[str, object]:
        """The wire form, with `size` always matching `sizeBytes`."""
        wire = self.model_copy(update={"size": human_bytes(self.size_bytes) or None})
        return ApiModel.to_wire(wire)
