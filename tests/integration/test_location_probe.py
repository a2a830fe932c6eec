"""The location probe against the real SeaweedFS and restic: restic derives a repository key
only when this password has not yet opened this exact repository, and anything that changes
the answer (password, config, key files) makes it derive the key again.

restic runs through a wrapper script that records each subcommand before executing the
real binary, so the tests see which restic commands a probe ran.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.objects import TEST_REPOSITORY_PASSWORD
from localcluster.sample_app import restic_check
from safehold.api.location import BackupStorageLocationSpec
from safehold.storage import restic
from safehold.storage.location import ResolvedLocation
from safehold.storage.probe import probe_location
from safehold.storage.s3 import S3Settings


class ResticCalls:
    """Which restic subcommands ran since the last `take()`."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def take(self) -> list[str]:
        if not self.log.exists():
            return []
        calls = [line.split()[0] for line in self.log.read_text().splitlines() if line.strip()]
        self.log.unlink()
        return calls


@pytest.fixture
def restic_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResticCalls:
    real = binaries.find("restic")
    log = tmp_path / "restic-calls.log"
    wrapper = tmp_path / "restic"
    # The first argument that is not an option (or an option's value) is the subcommand.
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -o|--cacert) skip=1; continue;; esac\n'
        '  if [ -n "$skip" ]; then skip=; continue; fi\n'
        '  case "$a" in -*) ;; *) echo "$a" >> "' + str(log) + '"; break;; esac\n'
        "done\n"
        'exec "' + str(real) + '" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("SAFEHOLD_RESTIC", str(wrapper))
    return ResticCalls(log)


def resolved(
    cluster: LocalCluster,
    bucket: str,
    namespace: str,
    password: str = TEST_REPOSITORY_PASSWORD,
    access_mode: str = "ReadWrite",
) -> ResolvedLocation:
    spec = BackupStorageLocationSpec.model_validate(
        {
            "endpoint": cluster.s3_endpoint,
            "bucket": bucket,
            "forcePathStyle": True,
            "accessMode": access_mode,
            "credentialsSecret": {"name": "unused"},
            "repositoryPasswordSecret": {"name": "unused"},
        }
    )
    s3 = S3Settings(
        bucket=bucket,
        prefix="",
        region="us-east-1",
        endpoint=cluster.s3_endpoint,
        force_path_style=True,
        access_key_id=cluster.s3_access_key,
        secret_access_key=cluster.s3_secret_key,
    )
    return ResolvedLocation(namespace, "main", spec, s3, password)


@pytest.fixture
def bucket(local_cluster: LocalCluster) -> str:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    local_cluster.create_bucket(name)
    return name


def test_new_repository_is_created_once_and_later_probes_run_no_restic(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    location = resolved(local_cluster, bucket, "shop")
    first = probe_location(location)
    assert (first.ok, first.reason, first.repository_initialized) == (True, "Available", True)
    assert first.message.endswith("repository created")
    # An absent config seen over S3: no `cat config` before `init`; one after it, so that a
    # repository another writer created at the same moment with another password is noticed.
    assert restic_calls.take() == ["init", "cat"]

    again = probe_location(location)
    assert (again.ok, again.reason, again.repository_initialized) == (True, "Available", True)
    assert again.message.endswith("repository opened")
    assert restic_calls.take() == []
    restic_check(local_cluster, bucket, "shop")


def test_a_wrong_password_is_found_even_after_the_right_one_opened_it(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    assert probe_location(resolved(local_cluster, bucket, "shop")).ok
    restic_calls.take()

    wrong = probe_location(resolved(local_cluster, bucket, "shop", password="not-the-password"))
    assert (wrong.ok, wrong.reason) == (False, "RepositoryPasswordWrong")
    # the password, then the password followed by a newline (a repository made before #16)
    assert restic_calls.take() == ["cat", "cat"]


def test_a_repository_replaced_behind_the_operator_is_opened_again(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    location = resolved(local_cluster, bucket, "shop")
    assert probe_location(location).ok
    # Someone deletes the repository and creates a new one with another password.
    s3 = local_cluster.s3_client()
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="repositories/shop/").get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    other = resolved(local_cluster, bucket, "shop", password="another-password")
    restic.init(other.repository("shop"))
    restic_calls.take()

    outcome = probe_location(location)
    assert (outcome.ok, outcome.reason) == (False, "RepositoryPasswordWrong")
    assert restic_calls.take() == ["cat", "cat"]


def test_a_secret_with_a_newline_creates_the_repository_with_the_typed_password(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    created = probe_location(resolved(local_cluster, bucket, "shop", password="typed\r\n"))
    assert (created.ok, created.with_newline) == (True, False)
    assert restic_calls.take() == ["init", "cat"]
    restic_check(local_cluster, bucket, "shop", password="typed")


def test_a_repository_made_with_the_newline_opens_and_is_then_verified(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    """Made before #16 from a Secret ending in a newline: the stripped password is refused,
    the password with the newline opens it; later probes run no restic at all."""
    restic.init(
        resolved(local_cluster, bucket, "shop", "old\n").newline_variant().repository("shop")
    )
    restic_calls.take()
    for secret in ("old\n", "old"):  # the original Secret, and one re-created by hand
        location = resolved(local_cluster, bucket, "shop", password=secret)
        first = probe_location(location)
        assert (first.ok, first.reason, first.with_newline) == (True, "Available", True)
        assert restic_calls.take() == (["cat", "cat"] if secret == "old\n" else [])
        again = probe_location(location)
        assert (again.ok, again.with_newline) == (True, True)
        assert restic_calls.take() == []
    restic_check(local_cluster, bucket, "shop", password="old\n")


def test_read_only_location_without_repository_runs_no_restic(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    outcome = probe_location(resolved(local_cluster, bucket, "shop", access_mode="ReadOnly"))
    assert (outcome.ok, outcome.repository_initialized) == (True, False)
    assert "no repository yet" in outcome.message
    assert restic_calls.take() == []
    listing = local_cluster.s3_client().list_objects_v2(Bucket=bucket)
    assert listing.get("KeyCount", 0) == 0


def test_existing_repository_is_opened_once_per_process(
    local_cluster: LocalCluster, bucket: str, restic_calls: ResticCalls
) -> None:
    restic.init(resolved(local_cluster, bucket, "shop").repository("shop"))
    restic_calls.take()
    location = resolved(local_cluster, bucket, "shop")
    assert probe_location(location).message.endswith("repository opened")
    assert restic_calls.take() == ["cat"]
    assert probe_location(location).ok
    assert restic_calls.take() == []
