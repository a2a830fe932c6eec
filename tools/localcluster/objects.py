"""Creating and reading Safehold objects on a LocalCluster (tests and `make demo`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from localcluster.helpers import kubectl, wait_for

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

JSON = dict[str, Any]
API = "safehold.io/v1alpha1"
# Repository password of locations made here: local test buckets only.
TEST_REPOSITORY_PASSWORD = "correct horse battery staple"  # noqa: S105


def apply(cluster: LocalCluster, namespace: str, *docs: JSON) -> None:
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs))


def get(cluster: LocalCluster, namespace: str | None, kind: str, name: str) -> JSON:
    ns = ["-n", namespace] if namespace else []
    out = kubectl(cluster, "get", *ns, kind, name, "-o", "json")
    result: JSON = json.loads(out.stdout)
    return result


def condition(obj: JSON, type_: str) -> JSON | None:
    found: JSON | None = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_),
        None,
    )
    return found


def secret(name: str, data: dict[str, str]) -> JSON:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def location_docs(
    cluster: LocalCluster,
    name: str,
    bucket: str,
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    password: str = TEST_REPOSITORY_PASSWORD,
    access_mode: str = "ReadWrite",
    with_secrets: bool = True,
    prefix: str = "",
) -> list[JSON]:
    """A BackupStorageLocation on the cluster's SeaweedFS, with its two Secrets."""
    docs = []
    if with_secrets:
        docs += [
            secret(
                f"{name}-s3",
                {
                    "accessKeyId": access_key or cluster.s3_access_key,
                    "secretAccessKey": secret_key or cluster.s3_secret_key,
                },
            ),
            secret(f"{name}-pw", {"password": password}),
        ]
    docs.append(
        {
            "apiVersion": API,
            "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": {
                "endpoint": endpoint or cluster.s3_endpoint,
                "bucket": bucket,
                "prefix": prefix,
                "forcePathStyle": True,
                "accessMode": access_mode,
                "credentialsSecret": {"name": f"{name}-s3"},
                "repositoryPasswordSecret": {"name": f"{name}-pw"},
            },
        }
    )
    return docs


def wait_probed(cluster: LocalCluster, namespace: str, name: str, timeout: float = 60) -> JSON:
    """The location once its Ready condition reflects the current generation."""

    def probed() -> JSON | None:
        obj = get(cluster, namespace, "backupstoragelocation", name)
        cond = condition(obj, "Ready")
        if cond and cond.get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        return None

    return wait_for(probed, timeout, f"Ready condition on {namespace}/{name}")


def wait_complete(
    cluster: LocalCluster, namespace: str, kind: str, name: str, timeout: float = 120
) -> JSON:
    """A Backup or RestoreRequest once its Complete condition is True."""

    def complete() -> JSON | None:
        obj = get(cluster, namespace, kind, name)
        cond = condition(obj, "Complete")
        return obj if cond and cond["status"] == "True" else None

    return wait_for(complete, timeout, f"{kind} {namespace}/{name} to complete")


def create_and_wait(
    cluster: LocalCluster, namespace: str, kind: str, name: str, spec: JSON, timeout: float = 120
) -> JSON:
    """Create a Backup or RestoreRequest and return it once Complete."""
    apply(
        cluster,
        namespace,
        {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec},
    )
    return wait_complete(cluster, namespace, kind.lower(), name, timeout)
