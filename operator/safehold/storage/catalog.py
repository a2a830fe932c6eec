"""The catalog: one small JSON manifest per backup next to the restic repository.

The catalog is what lets a new cluster re-discover every backup from the bucket alone, what
retention deletes and what reports read. It never holds secret data: object contents live
only in the encrypted repository.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import Field

from safehold.api.backup import BackupPhase, DatabaseResult, ResourceSummary, VolumeResult
from safehold.api.base import ApiModel
from safehold.api.content import BackupContent
from safehold.storage.layout import BucketLayout

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

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

    @property
    def restorable(self) -> bool:
        return self.phase in ("Succeeded", "PartiallyFailed")


def write_manifest(client: S3Client, layout: BucketLayout, manifest: BackupManifest) -> str:
    """Write the manifest; returns its key."""
    key = layout.manifest_key(manifest.namespace, manifest.name)
    body = json.dumps(manifest.to_wire(), indent=2, sort_keys=True).encode()
    client.put_object(Bucket=layout.bucket, Key=key, Body=body, ContentType="application/json")
    return key


def read_manifest(
    client: S3Client, layout: BucketLayout, namespace: str, name: str
) -> BackupManifest | None:
    """The manifest of one backup, or None when there is none."""
    try:
        obj = client.get_object(Bucket=layout.bucket, Key=layout.manifest_key(namespace, name))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return BackupManifest.model_validate(json.loads(obj["Body"].read()))


def list_manifests(client: S3Client, layout: BucketLayout, namespace: str) -> list[BackupManifest]:
    """Every manifest of one namespace's backups, oldest first."""
    prefix = layout.key("backups", namespace) + "/"
    manifests = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=layout.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/backup.json"):
                body = client.get_object(Bucket=layout.bucket, Key=item["Key"])["Body"].read()
                manifests.append(BackupManifest.model_validate(json.loads(body)))
    return sorted(manifests, key=lambda m: (m.start_time is None, m.start_time or 0, m.name))


def write_json(client: S3Client, bucket: str, key: str, document: Any) -> str:
    """Write a JSON document at a full key from BucketLayout (e.g. restore results)."""
    body = json.dumps(document, indent=1, sort_keys=True).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return key


def delete_manifest(client: S3Client, layout: BucketLayout, namespace: str, name: str) -> None:
    """Remove a backup's catalog entry and everything stored under its folder."""
    prefix = layout.key("backups", namespace, name) + "/"
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=layout.bucket, Prefix=prefix
    ):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=layout.bucket, Delete={"Objects": keys})
