"""plan_restore: ordered stages, mapped targets, scope checks, volumes and databases."""

from __future__ import annotations

import pytest

from safehold.api.backup import DatabaseResult, VolumeResult
from safehold.api.restore import RestoreRequestSpec
from safehold.planning.restore import STAGES, Entry, plan_restore
from safehold.planning.selection import Scope, SelectionError

ADMIN = Scope("safehold-system", "safehold-system")


def entry(resource: str, name: str, namespace: str | None = "shop", kind: str = "X") -> Entry:
    group = resource.partition(".")[2]
    return Entry(
        path=f"resources/{resource}/{namespace or '_cluster'}/{name}.json",
        resource=resource,
        api_version=f"{group}/v1" if group else "v1",
        kind=kind,
        namespace=namespace,
        name=name,
    )


ENTRIES = [
    entry("deployments.apps", "web"),
    entry("configmaps", "settings"),
    entry("persistentvolumeclaims", "data"),
    entry("persistentvolumeclaims", "fast"),
    entry("widgets.demo.example.com", "w1"),
    entry("customresourcedefinitions.apiextensions.k8s.io", "widgets.demo.example.com", None),
    entry("namespaces", "shop", None),
    entry("clusterroles.rbac.authorization.k8s.io", "reader", None),
    entry("services", "web"),
]
VOLUMES = [
    VolumeResult(namespace="shop", pvc="data", mode="filesystem", result="Succeeded"),
    VolumeResult(namespace="shop", pvc="fast", mode="snapshot", result="Succeeded"),
    VolumeResult(namespace="shop", pvc="lost", mode="filesystem", result="Failed"),
]
DATABASES = [
    DatabaseResult(target="pg", type="postgresql", result="Succeeded"),
    DatabaseResult(target="gone", type="postgresql", result="Failed"),
]


def names(plan_stage: object) -> list[str]:
    return [o.entry.name for o in plan_stage.objects]  # type: ignore[attr-defined]


def test_stages_in_order_with_their_items() -> None:
    spec = RestoreRequestSpec.model_validate({"backupRef": {"name": "b"}})
    plan = plan_restore(ENTRIES, spec, VOLUMES, DATABASES, ADMIN)
    assert tuple(s.name for s in plan.stages) == STAGES
    assert names(plan.stage("cluster")) == ["widgets.demo.example.com", "reader"]
    assert names(plan.stage("namespaces")) == ["shop"]
    assert plan.stage("namespaces").create_namespaces == ()
    assert names(plan.stage("configuration")) == ["settings", "web"]
    volumes = plan.stage("volumes")
    assert names(volumes) == ["data", "fast"]
    # A PVC from a VolumeSnapshot is created by the volume restore, not from its object.
    assert [o.skip is not None for o in volumes.objects] == [False, True]
    assert [v.backed_up.pvc for v in volumes.volumes] == ["data", "fast"]
    assert names(plan.stage("workloads")) == ["web"]
    assert names(plan.stage("resources")) == ["w1"]
    assert [d.target for d in plan.stage("databases").databases] == ["pg"]


def test_mapping_targets_and_missing_namespaces() -> None:
    spec = RestoreRequestSpec.model_validate(
        {
            "backupRef": {"name": "b"},
            "namespaceMapping": {"shop": "shop-copy"},
            "excludedResources": ["namespaces"],
        }
    )
    plan = plan_restore(ENTRIES, spec, VOLUMES, [], ADMIN)
    assert plan.stage("namespaces").create_namespaces == ("shop-copy",)
    assert {o.target_namespace for o in plan.stage("configuration").objects} == {"shop-copy"}
    assert {v.target_namespace for v in plan.stage("volumes").volumes} == {"shop-copy"}


def test_a_tenant_plan_stays_in_its_namespace() -> None:
    tenant = Scope("shop", "safehold-system")
    spec = RestoreRequestSpec.model_validate({"backupRef": {"name": "b"}})
    with pytest.raises(SelectionError) as refused:
        plan_restore(ENTRIES, spec, VOLUMES, DATABASES, tenant)
    assert refused.value.reason == "ClusterScopeNotAllowed"
    assert "clusterroles.rbac.authorization.k8s.io reader" in refused.value.message
    namespaced = RestoreRequestSpec.model_validate(
        {
            "backupRef": {"name": "b"},
            "excludedResources": ["customresourcedefinitions", "namespaces", "clusterroles"],
        }
    )
    plan = plan_restore(ENTRIES, namespaced, VOLUMES, DATABASES, tenant)
    assert {o.target_namespace for s in plan.stages for o in s.objects} == {"shop"}
    foreign_volume = [
        VolumeResult(namespace="other", pvc="x", mode="filesystem", result="Succeeded")
    ]
    with pytest.raises(SelectionError) as err_volume:
        plan_restore([], namespaced, foreign_volume, [], tenant)
    assert err_volume.value.reason == "NamespaceNotAllowed"
    mapped = RestoreRequestSpec.model_validate(
        {"backupRef": {"name": "b"}, "namespaceMapping": {"shop": "other"}}
    )
    with pytest.raises(SelectionError) as err:
        plan_restore(ENTRIES, mapped, VOLUMES, DATABASES, tenant)
    assert err.value.reason == "NamespaceNotAllowed"


def test_volumes_and_databases_can_be_left_out() -> None:
    spec = RestoreRequestSpec.model_validate(
        {
            "backupRef": {"name": "b"},
            "volumes": {"pvcs": ["shop/data"]},
            "databases": {"enabled": False},
        }
    )
    plan = plan_restore(ENTRIES, spec, VOLUMES, DATABASES, ADMIN)
    assert [v.backed_up.pvc for v in plan.stage("volumes").volumes] == ["data"]
    assert plan.stage("databases").databases == ()


# ------------------------------------------------------------------ what is never restored
def test_machinery_and_one_shot_objects_of_older_backups_are_skipped() -> None:
    """Backups made before the export excluded them may hold mover Jobs and Backup objects;
    restoring those would start runs (#16)."""
    from safehold.planning.restore import skip_reason

    job = {"metadata": {"name": "safehold-m-data", "labels": {"safehold.io/backup": "m"}}}
    assert skip_reason(entry("jobs.batch", "safehold-m-data", kind="Job"), job) == (
        "SafeholdInternal",
        "Safehold's machinery of an earlier run",
    )
    backup = {"metadata": {"name": "nightly"}}
    reason = skip_reason(entry("backups.safehold.io", "nightly", kind="Backup"), backup)
    assert reason is not None
    assert reason[0] == "SafeholdInternal"
    user_job = {"metadata": {"name": "report", "labels": {"app": "shop"}}}
    assert skip_reason(entry("jobs.batch", "report", kind="Job"), user_job) is None
    policy = {"metadata": {"name": "nightly"}}
    assert skip_reason(entry("backuppolicies.safehold.io", "nightly"), policy) is None


def test_cluster_scoped_custom_resources_restore_in_the_cluster_stage() -> None:
    issuer = entry("clusterissuers.cert-manager.io", "letsencrypt", None, kind="ClusterIssuer")
    plan = plan_restore([*ENTRIES, issuer], RestoreRequestSpec(), [], [], ADMIN)
    cluster = [p.entry.name for p in plan.stage("cluster").objects]
    assert cluster == ["widgets.demo.example.com", "reader", "letsencrypt"]


def test_mapped_cluster_role_binding_becomes_a_copy_with_the_mapped_subjects_only() -> None:
    from safehold.planning.restore import clean

    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "shop-view", "uid": "u"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
            {"kind": "ServiceAccount", "name": "other", "namespace": "billing"},
            {"kind": "User", "name": "auditor"},
        ],
    }
    e = entry("clusterrolebindings.rbac.authorization.k8s.io", "shop-view", None)
    out = clean(e, binding, {"shop": "shop-copy"}, {})
    assert out["metadata"]["name"] == "shop-view-shop-copy"
    assert out["metadata"]["annotations"] == {"safehold.io/copy-of": "shop-view"}
    assert out["subjects"] == [{"kind": "ServiceAccount", "name": "app", "namespace": "shop-copy"}]
    assert binding["subjects"][0]["namespace"] == "shop"  # the input is left alone
    # Unmapped, or mapped elsewhere: the binding keeps its name and subjects.
    same = clean(e, binding, {"billing-old": "billing-new"}, {})
    assert same["metadata"]["name"] == "shop-view"
    assert same["subjects"] == binding["subjects"]


def test_kept_paths_name_what_other_managers_set_and_ignore_server_fields() -> None:
    from safehold.planning.restore import kept_paths

    desired = {"metadata": {"name": "s", "labels": {"a": "1"}}, "data": {"mode": "p"}}
    existing = {
        "metadata": {"name": "s", "uid": "u", "resourceVersion": "7", "managedFields": [],
                     "labels": {"a": "2", "team": "ops"}},
        "data": {"mode": "e", "extra": "x"},
        "status": {"phase": "whatever"},
    }  # fmt: skip
    assert kept_paths(desired, existing) == ["data.extra", "metadata.labels.team"]


def test_object_references_are_found_in_nested_specs_and_bounded() -> None:
    from safehold.planning.dependencies import MAX_REFERENCES, object_references

    spec = {"issuerRef": {"kind": "ClusterIssuer", "name": "le"},
            "tls": [{"secretRef": {"kind": "Secret", "name": "t"}}], "kind": 3}  # fmt: skip
    assert object_references(spec) == {("ClusterIssuer", "le"), ("Secret", "t")}
    many = {"refs": [{"kind": "K", "name": str(i)} for i in range(10 * MAX_REFERENCES)]}
    assert len(object_references(many)) == MAX_REFERENCES
    deep: dict[str, object] = {"kind": "K", "name": "bottom"}
    for _ in range(50):
        deep = {"next": deep}
    assert object_references(deep) == set()  # deeper than any real spec: not followed
