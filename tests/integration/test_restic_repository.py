"""The restic wrapper against the real SeaweedFS: concurrent lazy initialisation of one
repository (a location probe racing a first backup) must create it exactly once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.objects import TEST_REPOSITORY_PASSWORD
from localcluster.sample_app import restic_check
from safehold.storage import restic
from safehold.storage.s3 import S3Settings


def test_concurrent_lazy_init_creates_one_repository(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFEHOLD_RESTIC", str(binaries.find("restic")))
    bucket = f"init-{uuid.uuid4().hex[:8]}"
    local_cluster.create_bucket(bucket)
    settings = S3Settings(
        bucket=bucket,
        prefix="",
        region="us-east-1",
        endpoint=local_cluster.s3_endpoint,
        force_path_style=True,
        access_key_id=local_cluster.s3_access_key,
        secret_access_key=local_cluster.s3_secret_key,
    )
    repo = restic.repository_for(settings, "shop", TEST_REPOSITORY_PASSWORD)
    with ThreadPoolExecutor(max_workers=4) as pool:
        created = list(pool.map(lambda _: restic.ensure_initialized(repo), range(4)))
    assert created.count(True) == 1
    listing = local_cluster.s3_client().list_objects_v2(
        Bucket=bucket, Prefix="repositories/shop/keys/"
    )
    assert len(listing.get("Contents", [])) == 1
    restic_check(local_cluster, bucket, "shop")
