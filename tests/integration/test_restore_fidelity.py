"""What a backup takes and a restore gives back, where a real application found them wrong
(#16): Safehold's own machinery and one-shot objects, cluster-scoped custom resources the
namespace names, ClusterRoleBindings in mapped restores, and what `update` leaves."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import apply, create_and_wait, get
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import delete_namespace_and_wait

pytestmark = pytest.mark.usefixtures("operator", "ops_bucket")
JSON = dict[str, Any]
GROUP = "fidelity.example.com"


def _pvc(name: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _job(name: str, labels: dict[str, str]) -> JSON:
    container = {"name": "main", "image": "registry.invalid/never:1", "command": ["true"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": True,  # never runs here
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def _backup(cluster: LocalCluster, name: str, **spec: Any) -> JSON:
    body = {"storageLocation": "main", **spec}
    done = create_and_wait(cluster, OPS, "Backup", name, body, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def _results(cluster: LocalCluster, restore: JSON) -> list[JSON]:
    bucket, key = restore["status"]["resultsPath"].removeprefix("s3://").split("/", 1)
    doc = json.loads(cluster.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    items: list[JSON] = doc["items"]
    return items


@pytest.fixture
def ns(local_cluster: LocalCluster, csi: object) -> Iterator[str]:
    name = f"fid-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(name)
    yield name
    kubectl(local_cluster, "delete", "namespace", name, "--wait=false", check=False)


def test_a_backup_takes_none_of_safeholds_machinery_or_one_shot_objects(
    local_cluster: LocalCluster, ns: str
) -> None:
    apply(local_cluster, ns, _pvc("data"))
    (local_cluster.pvc_path(ns, "data") / "file.txt").write_text("payload\n")
    volumes = {"volumes": {"rules": [{"mode": "filesystem"}]}}
    _backup(local_cluster, f"m1-{ns}", selection={"namespaces": [ns]}, **volumes)
    # What the first run left in the namespace: its mover Job and Pod (kept for their TTL).
    left = kubectl(local_cluster, "get", "jobs,pods", "-n", ns, "-o", "name").stdout.split()
    assert any(n.startswith("job.batch/") for n in left), left
    # A run child of an older Safehold (only the safehold.io/backup label), the user's own
    # Job, and a tenant's Backup object in the namespace (failed: no such location).
    apply(local_cluster, ns, _job("old-mover", {"safehold.io/backup": "old"}), _job("nightly", {}))
    failed = create_and_wait(local_cluster, ns, "Backup", "tenant", {"storageLocation": "nope"})
    assert failed["status"]["phase"] == "Failed", failed["status"]

    second = _backup(local_cluster, f"m2-{ns}", selection={"namespaces": [ns]}, **volumes)
    by_kind = second["status"]["resources"]["byKind"]
    assert by_kind.get("jobs.batch") == 1, by_kind  # the user's `nightly` only
    assert "pods" not in by_kind, by_kind
    assert "backups.safehold.io" not in by_kind, by_kind
    assert by_kind.get("persistentvolumeclaims") == 1, by_kind
    assert not [s for s in _secret_names(local_cluster, ns) if s.startswith("safehold-")]

    # Configuration only, into a fresh namespace: the user's Job and PVC, nothing of ours.
    copy = f"{ns}-copy"
    restored = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"m2-{ns}",
        {"backupRef": {"name": f"m2-{ns}"}, "namespaceMapping": {ns: copy},
         "volumes": {"enabled": False}},
    )  # fmt: skip
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    jobs = kubectl(local_cluster, "get", "jobs", "-n", copy, "-o", "name").stdout.split()
    assert jobs == ["job.batch/nightly"], jobs
    kubectl(local_cluster, "delete", "namespace", copy, "--wait=false")


def _secret_names(cluster: LocalCluster, ns: str) -> list[str]:
    out = kubectl(cluster, "get", "secrets", "-n", ns, "-o", "json").stdout
    return [s["metadata"]["name"] for s in json.loads(out)["items"]]


def _crd(plural: str, kind: str, scope: str) -> JSON:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {"name": "v1", "served": True, "storage": True,
                 "schema": {"openAPIV3Schema": schema}},
            ],
        },
    }  # fmt: skip


def test_cluster_scoped_custom_resources_the_namespace_names_come_back_with_their_crds(
    local_cluster: LocalCluster, ns: str
) -> None:
    """Like cert-manager: namespaced Certificates name a cluster-scoped ClusterIssuer (a kind
    with no namespaced instance). Both CRDs and the named issuer are taken; another issuer
    nobody names is not."""
    suffix = ns.removeprefix("fid-")
    badges, issuers = f"badges{suffix}", f"badgeissuers{suffix}"
    issuer_kind = f"BadgeIssuer{suffix}"
    for doc in (
        _crd(badges, f"Badge{suffix}", "Namespaced"),
        _crd(issuers, issuer_kind, "Cluster"),
    ):
        apply(local_cluster, "default", doc)
        kubectl(
            local_cluster, "wait", "--for=condition=Established", f"crd/{doc['metadata']['name']}"
        )
    for name in ("letsencrypt", "unused"):
        issuer = {"apiVersion": f"{GROUP}/v1", "kind": issuer_kind, "metadata": {"name": name}}
        apply(local_cluster, "default", {**issuer, "spec": {"acme": name}})
    badge = {
        "apiVersion": f"{GROUP}/v1",
        "kind": f"Badge{suffix}",
        "metadata": {"name": "web"},
        "spec": {"issuerRef": {"kind": issuer_kind, "name": "letsencrypt"}},
    }
    apply(local_cluster, ns, badge)

    without = _backup(local_cluster, f"cc0-{ns}", selection={"namespaces": [ns]})
    assert any(f"{issuer_kind}/letsencrypt" in w for w in without["status"]["warnings"]), without
    done = _backup(
        local_cluster, f"cc-{ns}", selection={"namespaces": [ns], "includeClusterResources": True}
    )
    by_kind = done["status"]["resources"]["byKind"]
    assert by_kind[f"{issuers}.{GROUP}"] == 1, by_kind  # letsencrypt, not unused
    assert by_kind["customresourcedefinitions.apiextensions.k8s.io"] == 2, by_kind

    # The disaster: namespace, issuers and both CRDs gone.
    delete_namespace_and_wait(local_cluster, ns)
    for crd in (badges, issuers):
        kubectl(local_cluster, "delete", "crd", f"{crd}.{GROUP}", "--wait=true")
    restored = create_and_wait(local_cluster, OPS, "RestoreRequest", f"cc-{ns}",
                               {"backupRef": {"name": f"cc-{ns}"}})  # fmt: skip
    assert restored["status"]["phase"] == "Succeeded", restored["status"]
    issuer = get(local_cluster, None, f"{issuers}.{GROUP}", "letsencrypt")
    assert issuer["spec"] == {"acme": "letsencrypt"}
    assert get(local_cluster, ns, f"{badges}.{GROUP}", "web")["spec"] == badge["spec"]
    names = kubectl(local_cluster, "get", f"{issuers}.{GROUP}", "-o", "name").stdout.split()
    assert [n.rpartition("/")[2] for n in names] == ["letsencrypt"], names
    stages = {s["name"]: s for s in restored["status"]["stages"]}
    assert stages["cluster"]["counts"]["created"] >= 3, stages  # two CRDs, the issuer
    for crd in (badges, issuers):
        kubectl(local_cluster, "delete", "crd", f"{crd}.{GROUP}", "--wait=false")


def _cluster_binding(name: str, ns: str) -> JSON:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "app", "namespace": ns},
            {"kind": "User", "name": "auditor", "apiGroup": "rbac.authorization.k8s.io"},
        ],
    }  # fmt: skip


@pytest.mark.parametrize("policy", ["skip", "update"])
def test_a_mapped_restore_copies_cluster_bindings_and_never_repoints_the_original(
    local_cluster: LocalCluster, ns: str, policy: str
) -> None:
    apply(local_cluster, ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "app"}})  # fmt: skip
    binding = f"{ns}-view"
    apply(local_cluster, "default", _cluster_binding(binding, ns))
    name = f"crb-{policy}-{ns}"
    _backup(local_cluster, name, selection={"namespaces": [ns], "includeClusterResources": True})
    copy = f"{ns}-{policy}"
    spec = {"backupRef": {"name": name}, "namespaceMapping": {ns: copy},
            "existingResourcePolicy": policy}  # fmt: skip
    for attempt in ("first", "again"):  # a second restore finds its own copy
        done = create_and_wait(local_cluster, OPS, "RestoreRequest", f"{name}-{attempt}", spec)
        assert done["status"]["phase"] == "Succeeded", done["status"]
    original = get(local_cluster, None, "clusterrolebinding", binding)
    assert original["subjects"] == _cluster_binding(binding, ns)["subjects"]
    copied = get(local_cluster, None, "clusterrolebinding", f"{binding}-{copy}")
    assert copied["subjects"] == [{"kind": "ServiceAccount", "name": "app", "namespace": copy}]
    assert copied["metadata"]["annotations"]["safehold.io/copy-of"] == binding
    assert copied["roleRef"]["name"] == "view"
    item = next(i for i in _results(local_cluster, done) if i["name"] == binding)
    assert item["targetName"] == f"{binding}-{copy}", item
    assert item["action"] == ("skipped" if policy == "skip" else "update"), item
    kubectl(local_cluster, "delete", "namespace", copy, "--wait=false")
    kubectl(local_cluster, "delete", "clusterrolebinding", binding, f"{binding}-{copy}")


def test_update_takes_the_backups_fields_and_names_the_fields_it_kept(
    local_cluster: LocalCluster, ns: str
) -> None:
    settings = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                "data": {"mode": "production"}}  # fmt: skip
    apply(local_cluster, ns, settings)
    _backup(local_cluster, f"upd-{ns}", selection={"namespaces": [ns]})
    # Another field manager changes a field the backup holds and adds two it lacks.
    edited = {**settings, "metadata": {"name": "settings", "labels": {"team": "ops"}},
              "data": {"mode": "edited", "extra": "x"}}  # fmt: skip
    kubectl(local_cluster, "apply", "--server-side", "--force-conflicts", "--field-manager=someone",
            "-n", ns,
            "-f", "-", stdin=json.dumps(edited))  # fmt: skip
    done = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"upd-{ns}",
        {"backupRef": {"name": f"upd-{ns}"}, "existingResourcePolicy": "update"},
    )  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    live = get(local_cluster, ns, "configmap", "settings")
    assert live["data"] == {"mode": "production", "extra": "x"}  # the backup's value won
    assert live["metadata"]["labels"]["team"] == "ops"
    item = next(i for i in _results(local_cluster, done) if i["name"] == "settings")
    assert item["action"] == "update"
    assert "data.mode" in item["changes"], item
    assert set(item["kept"]) == {"data.extra", "metadata.labels.team"}, item
