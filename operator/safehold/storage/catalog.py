"""The catalog: one small JSON manifest per backup next to the restic repository.

The catalog is what lets a new cluster re-discover every backup from the bucket alone, what
retention deletes and what reports read. It never holds secret data: object contents live
only in the encrypted repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field, ValidationError

from safehold.api.backup import BackupPhase, DatabaseResult, ResourceSummary, VolumeResult
from safehold.api.base import ApiModel
from safehold.api.content import BackupContent
from safehold.api.errors import Failure
from safehold.api.verification import BackupVerificationState
from safehold.planning import trust
from safehold.storage.layout import BucketLayout
from safehold.storage.s3 import delete_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# 1: the first format. 2: adds `content` (what the run took: selection, volumes, database
# targets with their Secret names, hooks), so a restore from the bucket alone knows where each
# database lived. Readers take both.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class ExportInfo(ApiModel):
    """Where the exported objects sit inside the restic snapshot."""

    root: str
    """Absolute directory stored in the snapshot; objects are under <root>/resources/."""
    index_path: str = "index.json"
    """Index of every object (relative to root): path, apiVersion, kind, sha256."""
    bytes: int = 0
    """Size of the exported JSON."""


class BackupManifest(ApiModel):
    """backups/<namespace>/<backup>/backup.json"""

    format_version: int = FORMAT_VERSION
    """Format of this manifest (1 or 2)."""
    namespace: str
    name: str
    uid: str | None = None
    policy: str | None = None
    storage_location: str
    phase: BackupPhase
    reason: str | None = None
    message: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces whose objects the backup holds."""
    included_cluster_resources: bool = False
    resources: ResourceSummary | None = None
    export: ExportInfo | None = None
    volumes: list[VolumeResult] = Field(default_factory=list)
    databases: list[DatabaseResult] = Field(default_factory=list)
    size_bytes: int | None = None
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    """safehold, kubernetes and restic versions that wrote the backup."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per stage: export, upload, total."""
    content: BackupContent | None = None
    """What the run took (format 2; absent in format 1 manifests). Never secret values: the
    database targets name their credentials Secrets only."""
    verification: BackupVerificationState | None = None
    """The last verdict of a drill or repository check (Verified, VerificationFailed,
    Corrupt), so that a cluster re-discovering the bucket sees it."""

    @property
    def restorable(self) -> bool:
        return self.phase in ("Succeeded", "PartiallyFailed")


def write_manifest(client: S3Client, layout: BucketLayout, manifest: BackupManifest) -> str:
    """Write the manifest; returns its key."""
    key = layout.manifest_key(manifest.namespace, manifest.name)
    body = json.dumps(manifest.to_wire(), indent=2, sort_keys=True).encode()
    client.put_object(Bucket=layout.bucket, Key=key, Body=body, ContentType="application/json")
    return key


class StoreFailed(Failure):
    """The object store did not answer a catalog request."""


@dataclass(frozen=True)
class ManifestProblem:
    """A catalog entry that cannot be used, and why."""

    key: str
    name: str
    """The backup's name as its folder says (the manifest itself is not trusted)."""
    reason: str
    message: str


def _parse(body: bytes, key: str) -> BackupManifest:
    if len(body) > trust.MAX_MANIFEST_BYTES:
        raise trust.Untrusted("ManifestInvalid", f"{key} is larger than a manifest can be")
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise trust.Untrusted("ManifestInvalid", f"{key} is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise trust.Untrusted("ManifestInvalid", f"{key} is not a JSON object")
    version = doc.get("formatVersion")
    if version not in READABLE_VERSIONS:
        raise trust.Untrusted(
            "ManifestVersionUnknown",
            f"{key} has format {version!r}; this Safehold reads formats "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer Safehold wrote it?)",
        )
    try:
        return BackupManifest.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise trust.Untrusted("ManifestInvalid", f"{key}: {where}: {first['msg']}") from None


def check_manifest(
    manifest: BackupManifest, layout: BucketLayout, namespace: str, name: str, *, privileged: bool
) -> None:
    """A manifest found at backups/<namespace>/<name>/ describes that backup only and names
    nothing outside what the namespace may touch."""
    if manifest.namespace != namespace or manifest.name != name or not trust.is_name(name):
        raise trust.Untrusted(
            "ManifestOutOfScope",
            f"the manifest at backups/{namespace}/{name}/ describes "
            f"{manifest.namespace}/{manifest.name}",
        )
    content = manifest.content
    services = [t.service.namespace for t in content.databases if t.service] if content else []
    trust.check_scope(
        namespace,
        privileged,
        manifest.namespaces,
        [v.namespace for v in manifest.volumes],
        services,
        manifest.included_cluster_resources,
    )
    trust.check_snapshots(
        [
            manifest.resources.snapshot_id if manifest.resources else None,
            *(v.snapshot_id for v in manifest.volumes),
            *(d.snapshot_id for d in manifest.databases),
            *(s for d in manifest.databases for s in d.snapshots),
            *(f.snapshot for d in manifest.databases for f in d.files),
        ],
        f"backup {name}",
    )
    for volume in manifest.volumes:
        allowed = [layout.namespace_repository(namespace, volume.namespace)]
        trust.check_repository(volume.repository, allowed, f"PVC {volume.pvc}")
    for path in (f.path for d in manifest.databases for f in d.files):
        trust.check_relative(path, "dump file")
    if manifest.export is not None:
        trust.check_absolute(manifest.export.root, "export root")
        trust.check_relative(manifest.export.index_path, "export index")


def read_manifest(
    client: S3Client, layout: BucketLayout, namespace: str, name: str, *, privileged: bool
) -> BackupManifest | None:
    """The manifest of one backup, or None when there is none; Untrusted when it is not a
    valid manifest of that backup."""
    key = layout.manifest_key(namespace, name)
    try:
        obj = client.get_object(Bucket=layout.bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise StoreFailed("StorageError", f"reading {key} failed: {err}") from None
    except BotoCoreError as err:
        raise StoreFailed("EndpointUnreachable", f"reading {key} failed: {err}") from None
    if int(obj.get("ContentLength") or 0) > trust.MAX_MANIFEST_BYTES:
        raise trust.Untrusted("ManifestInvalid", f"{key} is larger than a manifest can be")
    manifest = _parse(obj["Body"].read(trust.MAX_MANIFEST_BYTES + 1), key)
    check_manifest(manifest, layout, namespace, name, privileged=privileged)
    return manifest


def scan_manifests(
    client: S3Client, layout: BucketLayout, namespace: str, *, privileged: bool
) -> tuple[list[BackupManifest], list[ManifestProblem]]:
    """Every valid manifest of one namespace's backups (oldest first), and the entries that
    are not valid, each on its own (one bad entry never hides the others)."""
    prefix = layout.key("backups", namespace) + "/"
    manifests, problems = [], []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=layout.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            key = str(item["Key"])
            rest = key.removeprefix(prefix).split("/")
            if len(rest) != 2 or rest[1] != "backup.json":
                continue
            try:
                found = read_manifest(client, layout, namespace, rest[0], privileged=privileged)
            except trust.Untrusted as err:
                problems.append(ManifestProblem(key, rest[0], err.reason, err.message))
                continue
            if found is not None:
                manifests.append(found)
    manifests.sort(key=lambda m: (m.start_time is None, m.start_time or 0, m.name))
    return manifests, problems


def write_json(client: S3Client, bucket: str, key: str, document: Any) -> str:
    """Write a JSON document at a full key from BucketLayout (e.g. restore results)."""
    body = json.dumps(document, indent=1, sort_keys=True).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return key


def delete_manifest(client: S3Client, layout: BucketLayout, namespace: str, name: str) -> None:
    """Remove a backup's catalog entry and everything stored under its folder."""
    delete_prefix(client, layout.bucket, layout.key("backups", namespace, name) + "/")
