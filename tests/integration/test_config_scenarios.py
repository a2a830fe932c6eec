"""Restore options (mapping, dry run, skip/update, policyRef), tenancy, and bad input: each
failure names its reason and nothing is lost."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import (
    API,
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import LABELS, restic_check

pytestmark = pytest.mark.usefixtures("operator")


def reason(obj: dict[str, Any]) -> str:
    return str((condition(obj, "Succeeded") or {}).get("reason"))


def ns_backup(cluster: LocalCluster, ns: str, name: str, **selection: Any) -> dict[str, Any]:
    spec = {"storageLocation": "main", "selection": {"namespaces": [ns], **selection}}
    done = create_and_wait(cluster, OPS, "Backup", name, spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def configmap_data(cluster: LocalCluster, ns: str, name: str = "settings") -> dict[str, str] | None:
    result = kubectl(cluster, "get", "-n", ns, "configmap", name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    data: dict[str, str] = json.loads(result.stdout).get("data", {})
    return data


@pytest.mark.usefixtures("ops_bucket")
def test_namespace_mapping_restores_into_a_new_namespace(
    local_cluster: LocalCluster, app: str
) -> None:
    ns_backup(local_cluster, app, f"map-{app}")
    copy = f"{app}-copy"
    done = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"map-{app}",
        {"backupRef": {"name": f"map-{app}"}, "namespaceMapping": {app: copy}},
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert configmap_data(local_cluster, copy) == configmap_data(local_cluster, app)
    binding = get(local_cluster, copy, "rolebinding", "shop-reader")
    assert binding["subjects"][0]["namespace"] == copy
    assert (
        get(local_cluster, None, "namespace", copy)["metadata"]["labels"]["safehold.io/restored-by"]
        == f"map-{app}"
    )
    kubectl(local_cluster, "delete", "namespace", copy, "--wait=false")


@pytest.mark.usefixtures("ops_bucket")
def test_label_selector_restores_only_matching_objects_in_stages(
    local_cluster: LocalCluster, app: str
) -> None:
    ns_backup(local_cluster, app, f"sel-{app}")
    copy = f"{app}-sel"
    done = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"sel-{app}",
        {
            "backupRef": {"name": f"sel-{app}"},
            "namespaceMapping": {app: copy},
            "labelSelector": {"matchLabels": LABELS},
        },
    )
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    restored = kubectl(
        local_cluster, "get", "-n", copy, "cm,secret,sa,role,deploy,svc,widgets", "-o", "name"
    ).stdout.split()
    assert {"configmap/settings", "secret/db-password", "service/web"} <= set(restored)
    assert "deployment.apps/web" in restored
    # Objects without the labels (the ServiceAccount, Role, Widgets) were not selected.
    assert not [n for n in restored if n.startswith(("serviceaccount/shop", "role.", "widget."))]
    stages = status["stages"]
    assert [s["name"] for s in stages] == [
        "cluster",
        "namespaces",
        "configuration",
        "volumes",
        "workloads",
        "resources",
        "databases",
    ]
    assert {s["phase"] for s in stages} == {"Completed"}
    by_name = {s["name"]: s for s in stages}
    assert by_name["namespaces"]["items"] == 1  # the mapped namespace it created
    assert by_name["workloads"]["counts"]["created"] == 1
    assert sum(s["counts"]["created"] for s in stages) == status["counts"]["created"]
    kubectl(local_cluster, "delete", "namespace", copy, "--wait=false")


@pytest.mark.usefixtures("ops_bucket")
def test_dry_run_changes_nothing_and_reports_the_plan(
    local_cluster: LocalCluster, app: str
) -> None:
    ns_backup(local_cluster, app, f"dry-{app}")
    kubectl(local_cluster, "delete", "-n", app, "configmap", "settings")
    kubectl(
        local_cluster,
        "patch",
        "-n",
        app,
        "secret",
        "db-password",
        "--type=merge",
        "-p",
        json.dumps({"stringData": {"password": "changed"}}),
    )
    before = kubectl(local_cluster, "get", "-n", app, "all,cm,secret", "-o", "name").stdout
    done = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"dry-{app}",
        {"backupRef": {"name": f"dry-{app}"}, "dryRun": True, "existingResourcePolicy": "update"},
    )
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["counts"]["created"] == 1  # the deleted ConfigMap
    assert status["counts"]["updated"] >= 1
    assert "dry run, nothing changed" in (condition(done, "Succeeded") or {})["message"]
    assert configmap_data(local_cluster, app) is None
    after = kubectl(local_cluster, "get", "-n", app, "all,cm,secret", "-o", "name").stdout
    assert after == before
    results = json.loads(
        local_cluster.s3_client()
        .get_object(
            Bucket=status["resultsPath"].split("/")[2],
            Key=status["resultsPath"].split("/", 3)[3],
        )["Body"]
        .read()
    )
    secret = next(
        i for i in results["items"] if i["resource"] == "secrets" and i["name"] == "db-password"
    )
    assert secret["action"] == "update"
    assert "data.password" in secret["changes"]


@pytest.mark.usefixtures("ops_bucket")
def test_skip_keeps_existing_objects_and_update_overwrites_them(
    local_cluster: LocalCluster, app: str
) -> None:
    ns_backup(local_cluster, app, f"su-{app}")
    kubectl(
        local_cluster,
        "patch",
        "-n",
        app,
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        json.dumps({"data": {"mode": "edited"}}),
    )
    skip = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"skip-{app}", {"backupRef": {"name": f"su-{app}"}}
    )
    assert skip["status"]["counts"]["skipped"] >= 1
    assert skip["status"]["counts"]["updated"] == 0
    assert configmap_data(local_cluster, app)["mode"] == "edited"  # type: ignore[index]
    update = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"upd-{app}",
        {"backupRef": {"name": f"su-{app}"}, "existingResourcePolicy": "update"},
    )
    assert update["status"]["phase"] == "Succeeded", update["status"]
    assert update["status"]["counts"]["updated"] >= 1
    assert configmap_data(local_cluster, app)["mode"] == "production"  # type: ignore[index]


def test_policy_backup_and_restore_of_its_latest_backup(
    local_cluster: LocalCluster, ops_bucket: str, app: str
) -> None:
    apply(
        local_cluster,
        OPS,
        {
            "apiVersion": API,
            "kind": "BackupPolicy",
            "metadata": {"name": f"pol-{app}"},
            "spec": {"storageLocation": "main", "selection": {"namespaces": [app]}},
        },
    )
    first = create_and_wait(
        local_cluster, OPS, "Backup", f"p1-{app}", {"policyRef": {"name": f"pol-{app}"}}
    )
    assert first["status"]["policy"] == f"pol-{app}"
    kubectl(
        local_cluster,
        "patch",
        "-n",
        app,
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        json.dumps({"data": {"mode": "second"}}),
    )
    second = create_and_wait(
        local_cluster, OPS, "Backup", f"p2-{app}", {"policyRef": {"name": f"pol-{app}"}}
    )
    assert second["metadata"]["labels"]["safehold.io/policy"] == f"pol-{app}"
    kubectl(local_cluster, "delete", "-n", app, "configmap", "settings")
    done = create_and_wait(
        local_cluster, OPS, "RestoreRequest", f"pol-{app}", {"policyRef": {"name": f"pol-{app}"}}
    )
    assert done["status"]["backup"] == f"p2-{app}"
    assert configmap_data(local_cluster, app)["mode"] == "second"  # type: ignore[index]
    restic_check(local_cluster, ops_bucket, OPS)


def test_deleting_a_backup_object_keeps_its_data(
    local_cluster: LocalCluster, ops_bucket: str, app: str
) -> None:
    ns_backup(local_cluster, app, f"keep-{app}")
    kubectl(local_cluster, "delete", "-n", OPS, "backup", f"keep-{app}")
    keys = [
        o["Key"]
        for o in local_cluster.s3_client()
        .list_objects_v2(Bucket=ops_bucket, Prefix=f"backups/{OPS}/keep-{app}/")
        .get("Contents", [])
    ]
    assert keys == [f"backups/{OPS}/keep-{app}/backup.json"]


# ---------------------------------------------------------------- bad input and faults


@pytest.mark.usefixtures("ops_bucket")
@pytest.mark.parametrize(
    ("selection", "expected", "words"),
    [
        ({"namespaces": ["no-such-namespace"]}, "NamespaceNotFound", "no-such-namespace"),
        ({"includedResources": ["gizmos.example.com"]}, "UnknownResourceType", "gizmos"),
    ],
)
def test_invalid_backup_fails_with_reason(
    local_cluster: LocalCluster, selection: dict[str, Any], expected: str, words: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    done = create_and_wait(
        local_cluster, OPS, "Backup", name, {"storageLocation": "main", "selection": selection}
    )
    assert done["status"]["phase"] == "Failed"
    assert reason(done) == expected
    assert words in (condition(done, "Succeeded") or {})["message"]
    assert (condition(done, "Complete") or {})["status"] == "True"
    events = json.loads(
        kubectl(
            local_cluster,
            "get",
            "events",
            "-n",
            OPS,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert expected in {e["reason"] for e in events}


def test_backup_to_a_location_that_is_not_ready(
    local_cluster: LocalCluster, operator: Any, app: str
) -> None:
    bucket = f"pw-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, app, *location_docs(local_cluster, "good", bucket))
    wait_probed(local_cluster, app, "good")
    apply(local_cluster, app, *location_docs(local_cluster, "wrongpw", bucket, password="nope"))
    probed = wait_probed(local_cluster, app, "wrongpw")
    assert (condition(probed, "Ready") or {})["reason"] == "RepositoryPasswordWrong"
    done = create_and_wait(
        local_cluster, app, "Backup", "to-wrongpw", {"storageLocation": "wrongpw"}
    )
    assert reason(done) == "LocationNotReady"
    assert "RepositoryPasswordWrong" in (condition(done, "Succeeded") or {})["message"]
    missing = create_and_wait(
        local_cluster, app, "Backup", "to-nowhere", {"storageLocation": "nowhere"}
    )
    assert reason(missing) == "LocationNotFound"
    assert not [
        o
        for o in local_cluster.s3_client().list_objects_v2(Bucket=bucket).get("Contents", [])
        if o["Key"].startswith("backups/")
    ]


@pytest.mark.usefixtures("ops_bucket")
def test_restore_of_missing_or_failed_backup(local_cluster: LocalCluster) -> None:
    missing = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"m-{uuid.uuid4().hex[:6]}",
        {"backupRef": {"name": "never-existed"}},
    )
    assert reason(missing) == "BackupNotFound"
    failed_name = f"f-{uuid.uuid4().hex[:6]}"
    failed = create_and_wait(
        local_cluster,
        OPS,
        "Backup",
        failed_name,
        {"storageLocation": "main", "selection": {"namespaces": ["no-such-namespace"]}},
    )
    assert failed["status"]["phase"] == "Failed"
    restore = create_and_wait(
        local_cluster, OPS, "RestoreRequest", failed_name, {"backupRef": {"name": failed_name}}
    )
    assert reason(restore) == "BackupNotRestorable"


@pytest.fixture
def tenant(local_cluster: LocalCluster, app: str) -> Iterator[str]:
    """The sample app's namespace with its own Ready location `own` (checked afterwards)."""
    bucket = f"tn-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, app, *location_docs(local_cluster, "own", bucket))
    assert (condition(wait_probed(local_cluster, app, "own"), "Ready") or {})["status"] == "True"
    yield app
    restic_check(local_cluster, bucket, app)


def test_tenant_stays_in_its_namespace(local_cluster: LocalCluster, tenant: str) -> None:
    other = f"other-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(other)
    foreign = create_and_wait(
        local_cluster,
        tenant,
        "Backup",
        "foreign",
        {"storageLocation": "own", "selection": {"namespaces": [other]}},
    )
    assert reason(foreign) == "NamespaceNotAllowed"
    cluster_wide = create_and_wait(
        local_cluster,
        tenant,
        "Backup",
        "cluster-wide",
        {"storageLocation": "own", "selection": {"includeClusterResources": True}},
    )
    assert reason(cluster_wide) == "ClusterResourcesNotAllowed"
    own = create_and_wait(local_cluster, tenant, "Backup", "own", {"storageLocation": "own"})
    assert own["status"]["phase"] == "Succeeded", own["status"]
    assert "namespaces" not in own["status"]["resources"]["byKind"]
    target = f"elsewhere-{uuid.uuid4().hex[:6]}"
    escape = create_and_wait(
        local_cluster,
        tenant,
        "RestoreRequest",
        "escape",
        {"backupRef": {"name": "own"}, "namespaceMapping": {tenant: target}},
    )
    assert reason(escape) == "NamespaceNotAllowed"
    assert kubectl(local_cluster, "get", "namespace", target, check=False).returncode != 0


def test_rejected_object_is_named_and_the_rest_restores(
    local_cluster: LocalCluster, ops_bucket: str, app: str
) -> None:
    ns_backup(local_cluster, app, f"rej-{app}")
    policy = f"deny-settings-{app}"
    apply(
        local_cluster,
        "default",
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.metadata.name != 'settings'",
                        "message": "settings are managed elsewhere",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": f"{app}-r"}
                    }
                },
            },
        },
    )
    try:
        done = create_and_wait(
            local_cluster,
            OPS,
            "RestoreRequest",
            f"rej-{app}",
            {"backupRef": {"name": f"rej-{app}"}, "namespaceMapping": {app: f"{app}-r"}},
        )
    finally:
        kubectl(
            local_cluster,
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            policy,
            check=False,
        )
    status = done["status"]
    assert status["phase"] == "PartiallyFailed", status
    assert status["counts"]["failed"] == 1
    assert any(
        "configmaps" in e and "settings" in e and "managed elsewhere" in e for e in status["errors"]
    ), status["errors"]
    assert get(local_cluster, f"{app}-r", "secret", "db-password")
    restic_check(local_cluster, ops_bucket, OPS)
    kubectl(local_cluster, "delete", "namespace", f"{app}-r", "--wait=false")
