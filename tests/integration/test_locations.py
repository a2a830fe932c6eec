"""BackupStorageLocation against the real SeaweedFS S3 server and restic, through the
operator running as a process against the real API server."""

from __future__ import annotations

import json
import secrets
import socket
import uuid
from typing import Any

import boto3
import pytest

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import apply, get, location_docs, wait_probed

pytestmark = pytest.mark.usefixtures("operator")


def make_location(
    cluster: LocalCluster, namespace: str, name: str, bucket: str, **options: Any
) -> None:
    apply(cluster, namespace, *location_docs(cluster, name, bucket, **options))


def location(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return get(cluster, namespace, "backupstoragelocation", name)


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


@pytest.fixture
def bucket(local_cluster: LocalCluster) -> str:
    name = f"bkt-{uuid.uuid4().hex[:10]}"
    local_cluster.create_bucket(name)
    return name


def s3_keys(cluster: LocalCluster, bucket: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id=cluster.s3_access_key,
        aws_secret_access_key=cluster.s3_secret_key,
        region_name="us-east-1",
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def events_for(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        cluster,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def test_location_becomes_ready_and_creates_the_repository(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    make_location(local_cluster, namespace, "primary", bucket, prefix="team-a")
    obj = wait_probed(local_cluster, namespace, "primary")
    cond = ready(obj)
    assert (cond["status"], cond["reason"]) == ("True", "Available"), cond
    assert obj["status"]["repositoryInitialized"] is True
    keys = s3_keys(local_cluster, bucket)
    assert f"team-a/repositories/{namespace}/config" in keys
    assert not [k for k in keys if "/.safehold/probe/" in k], "write probe left behind"
    printed = kubectl(local_cluster, "get", "bsl", "-n", namespace).stdout
    assert "True" in printed.splitlines()[1]


def test_wrong_secret_key_is_invalid_credentials(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    make_location(local_cluster, namespace, "badkey", bucket, secret_key=wrong)
    obj = wait_probed(local_cluster, namespace, "badkey")
    cond = ready(obj)
    assert (cond["status"], cond["reason"]) == ("False", "InvalidCredentials"), cond
    assert wrong not in json.dumps(obj)
    reasons = {e["reason"] for e in events_for(local_cluster, namespace, "badkey")}
    assert "InvalidCredentials" in reasons


def test_unknown_access_key_is_invalid_credentials(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    make_location(local_cluster, namespace, "nokey", bucket, access_key="AKIANOSUCHKEY000")
    cond = ready(wait_probed(local_cluster, namespace, "nokey"))
    assert (cond["status"], cond["reason"]) == ("False", "InvalidCredentials"), cond


def test_missing_bucket_is_bucket_not_found(local_cluster: LocalCluster, namespace: str) -> None:
    make_location(local_cluster, namespace, "nobucket", "does-not-exist-" + uuid.uuid4().hex[:6])
    cond = ready(wait_probed(local_cluster, namespace, "nobucket"))
    assert (cond["status"], cond["reason"]) == ("False", "BucketNotFound"), cond
    assert "does-not-exist-" in cond["message"]


def test_missing_secret_is_secret_not_found(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    make_location(local_cluster, namespace, "nosecret", bucket, with_secrets=False)
    cond = ready(wait_probed(local_cluster, namespace, "nosecret"))
    assert (cond["status"], cond["reason"]) == ("False", "SecretNotFound"), cond
    assert f"Secret {namespace}/nosecret-s3 does not exist" in cond["message"]


def test_unreachable_endpoint(local_cluster: LocalCluster, namespace: str, bucket: str) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    make_location(local_cluster, namespace, "nowhere", bucket, endpoint=f"http://127.0.0.1:{port}")
    cond = ready(wait_probed(local_cluster, namespace, "nowhere", timeout=90))
    assert (cond["status"], cond["reason"]) == ("False", "EndpointUnreachable"), cond


def test_wrong_repository_password(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    make_location(local_cluster, namespace, "first", bucket, password="the-right-password")
    assert ready(wait_probed(local_cluster, namespace, "first"))["status"] == "True"
    make_location(local_cluster, namespace, "second", bucket, password="not-the-password")
    obj = wait_probed(local_cluster, namespace, "second")
    cond = ready(obj)
    assert (cond["status"], cond["reason"]) == ("False", "RepositoryPasswordWrong"), cond
    assert "not-the-password" not in json.dumps(obj)


def test_read_only_location_writes_nothing(
    local_cluster: LocalCluster, namespace: str, bucket: str
) -> None:
    make_location(local_cluster, namespace, "dr", bucket, access_mode="ReadOnly")
    obj = wait_probed(local_cluster, namespace, "dr")
    cond = ready(obj)
    assert (cond["status"], cond["reason"]) == ("True", "Available"), cond
    assert obj["status"]["repositoryInitialized"] is False
    assert s3_keys(local_cluster, bucket) == []


def test_fixing_the_spec_reprobes(local_cluster: LocalCluster, namespace: str, bucket: str) -> None:
    make_location(local_cluster, namespace, "fixme", "missing-" + uuid.uuid4().hex[:6])
    assert ready(wait_probed(local_cluster, namespace, "fixme"))["status"] == "False"
    kubectl(
        local_cluster,
        "patch",
        "-n",
        namespace,
        "bsl",
        "fixme",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"bucket": bucket}}),
    )
    cond = ready(wait_probed(local_cluster, namespace, "fixme"))
    assert (cond["status"], cond["reason"]) == ("True", "Available"), cond


def test_no_secret_reaches_logs_events_or_metrics(
    local_cluster: LocalCluster, operator: Any, namespace: str, bucket: str
) -> None:
    password = "pw-" + secrets.token_hex(16)
    make_location(local_cluster, namespace, "quiet", bucket, password=password)
    assert ready(wait_probed(local_cluster, namespace, "quiet"))["status"] == "True"
    everything = "\n".join(
        [
            operator.log_text(),
            operator.metrics(),
            json.dumps(events_for(local_cluster, namespace, "quiet")),
            json.dumps(location(local_cluster, namespace, "quiet")["status"]),
        ]
    )
    for secret in (password, local_cluster.s3_secret_key):
        assert secret not in everything
    assert 'safehold_location_ready{location="quiet",namespace="' + namespace in everything
