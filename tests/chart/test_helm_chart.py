"""The Helm chart (charts/safehold), offline: lint, render, Kubernetes schemas, values schema,
CRD drift, RBAC split, Pod Security and alerts. The server-side dry run against the real API
server is tests/integration/test_chart.py. Skipped without helm (`tools/bootstrap helm`)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helmchart import (
    CHART,
    NON_DEFAULT,
    REPO,
    by_kind,
    helm,
    helm_binary,
    pinned_kubernetes,
    render,
    render_text,
)

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="helm is missing: run `tools/bootstrap helm`"
)

VALUE_SETS = {"default": {}, "non-default": NON_DEFAULT}
# Kinds from CRDs that the Kubernetes schemas do not know; checked structurally below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}
KEEP = "helm.sh/resource-policy"


def _schema_version() -> str:
    """The bundled schema of the pinned Kubernetes minor release."""
    major, minor = pinned_kubernetes().lstrip("v").split(".")[:2]
    return f"{major}.{minor}.0"


def test_chart_version_follows_pyproject() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == version
    assert chart["appVersion"] == version


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("lint", "--strict", str(CHART), "--values", str(path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_objects_match_kubernetes_schemas(values: dict[str, Any], tmp_path: Path) -> None:
    docs = render(values, tmp_path)
    assert docs
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("monitoring.coreos.com/v1", "kopf.dev/v1")
            assert doc["metadata"]["name"]
            continue
        kubernetes_validate.validate(doc, _schema_version(), strict=True)
        checked += 1
    assert checked >= 6


def test_validator_rejects_a_bad_object() -> None:
    """The offline validator really validates (a typo in a field fails)."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, _schema_version(), strict=True)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": "two"}, "replicas"),
        ({"replicas": -1}, "replicas"),
        ({"rbac": {"restoreWrite": "no"}}, "restoreWrite"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
        ({"runAsUser": 0}, "runAsUser"),
        ({"crds": {"instal": True}}, "instal"),
        ({"unknownTopLevel": 1}, "unknownTopLevel"),
        ({"metrics": {"prometheusRule": {"noSuccessHours": "a day"}}}, "noSuccessHours"),
        ({"metrics": {"prometheusRule": {"noSuccessfulDrillDays": "8d"}}}, "noSuccessfulDrillDays"),
        ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "watchNamespaces"),
    ],
)
def test_values_schema_rejects_bad_values(
    values: dict[str, Any], complaint: str, tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ["template", "x", str(CHART), "--values", str(path)]
    result = helm(*args, "--kube-version", pinned_kubernetes(), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


# ------------------------------------------------------------------ CRDs


def test_chart_crd_sources_are_identical_to_crds() -> None:
    """`make crds` writes both; a hand edit or a stale copy fails here."""
    ours = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    theirs = sorted(p.name for p in (CHART / "crds-source").glob("*.yaml"))
    assert ours == theirs
    for name in ours:
        a = (REPO / "crds" / name).read_bytes()
        b = (CHART / "crds-source" / name).read_bytes()
        assert a == b, f"charts/safehold/crds-source/{name} differs from crds/: run `make crds`"


def test_rendered_crds_equal_crds_plus_labels_and_keep(tmp_path: Path) -> None:
    rendered = {
        d["metadata"]["name"]: d for d in by_kind(render({}, tmp_path), "CustomResourceDefinition")
    }
    expected = {}
    for path in (REPO / "crds").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        expected[doc["metadata"]["name"]] = doc
    assert set(rendered) == set(expected)
    for name, want in expected.items():
        got = rendered[name]
        assert got["metadata"]["annotations"][KEEP] == "keep"
        assert got["metadata"]["labels"].items() >= want["metadata"].get("labels", {}).items()
        strip = {"labels", "annotations"}
        assert {k: v for k, v in got["metadata"].items() if k not in strip} == {
            k: v for k, v in want["metadata"].items() if k not in strip
        }
        assert {k: v for k, v in got.items() if k != "metadata"} == {
            k: v for k, v in want.items() if k != "metadata"
        }


def test_crds_install_false_renders_no_crds(tmp_path: Path) -> None:
    docs = render({"crds": {"install": False}}, tmp_path)
    assert by_kind(docs, "CustomResourceDefinition") == []


# ------------------------------------------------------------------ workload and security


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs, "Deployment")
    return deployment


def test_deployment_defaults_are_restricted(tmp_path: Path) -> None:
    docs = render({}, tmp_path)
    deployment = _operator(docs)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][:1] == ["operator"]
    assert not any(a.startswith("--peering") for a in container["args"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SAFEHOLD_MOVER_IMAGE"]["value"] == container["image"] == "safehold:0.1.0"
    assert env["SAFEHOLD_SCRATCH_DIR"]["value"] == "/scratch"
    assert env["SAFEHOLD_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == {"/scratch", "/tmp"}
    assert all("emptyDir" in volumes[n] for n in mounts.values())
    # The movers' ServiceAccount has no token and no binding.
    accounts = {a["metadata"]["name"]: a for a in by_kind(docs, "ServiceAccount")}
    mover = accounts[env["SAFEHOLD_MOVER_SERVICE_ACCOUNT"]["value"]]
    assert mover["automountServiceAccountToken"] is False
    bound = {s["name"] for b in by_kind(docs, "ClusterRoleBinding") for s in b["subjects"]}
    assert bound == {pod["serviceAccountName"]}
    assert by_kind(docs, "ClusterKopfPeering") == []
    assert by_kind(docs, "ServiceMonitor") == by_kind(docs, "PrometheusRule") == []


def test_non_default_values(tmp_path: Path) -> None:
    docs = render(NON_DEFAULT, tmp_path)
    deployment = _operator(docs)
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--peering=safehold" in container["args"]
    assert "--namespace=team-a" in container["args"]
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["image"] == "registry.example.com/safehold:0.1.0"
    # One KopfPeering per watched namespace, created by a hook once its CRD is served.
    peerings = by_kind(docs, "KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {"team-a", "team-b"}
    assert all("post-install" in p["metadata"]["annotations"]["helm.sh/hook"] for p in peerings)
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crds == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    # Restore-write off: no ClusterRole may create, patch or update arbitrary resources.
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert not any(n.endswith("-restore-write") for n in roles)
    for role in roles.values():
        for rule in role["rules"]:
            if "*" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"} or rule["apiGroups"] == [
                    "safehold.io"
                ]
    assert len(by_kind(docs, "ServiceMonitor")) == 1
    assert len(by_kind(docs, "PrometheusRule")) == 1


def test_rbac_is_split_and_restore_write_is_named(tmp_path: Path) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render({}, tmp_path), "ClusterRole")}
    assert set(roles) == {
        "safehold-backup-read",
        "safehold-restore-write",
        "safehold-operator",
        "safehold-tenant-edit",
        "safehold-tenant-view",
    }
    assert roles["safehold-backup-read"]["rules"] == [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}
    ]
    write = roles["safehold-restore-write"]["rules"][0]
    assert write["verbs"] == ["create", "patch", "update"]
    operator_rules = roles["safehold-operator"]["rules"]
    assert not any("*" in r["apiGroups"] for r in operator_rules)
    assert not any(
        "delete" in r["verbs"] and "*" in r["resources"] and r["apiGroups"] != ["safehold.io"]
        for r in operator_rules
    )


def test_tenant_roles_aggregate_and_never_grant_status(tmp_path: Path) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render({}, tmp_path), "ClusterRole")}
    edit, view = roles["safehold-tenant-edit"], roles["safehold-tenant-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for role in (edit, view):
        resources = [r for rule in role["rules"] for r in rule["resources"]]
        assert resources
        assert not any("/" in r or r == "*" for r in resources)
    assert view["rules"][0]["verbs"] == ["get", "list", "watch"]
    # The operator may impersonate ServiceAccounts (tenant restores act as one).
    assert any(
        r["resources"] == ["serviceaccounts"] and r["verbs"] == ["impersonate"]
        for r in roles["safehold-operator"]["rules"]
    )
    plain = render({"rbac": {"tenantRoles": {"aggregate": False}}}, tmp_path)
    labels = {r["metadata"]["name"]: r["metadata"]["labels"] for r in by_kind(plain, "ClusterRole")}
    assert not any(k.startswith("rbac.authorization") for k in labels["safehold-tenant-edit"])
    none = render({"rbac": {"tenantRoles": {"create": False}}}, tmp_path)
    assert "safehold-tenant-edit" not in {
        r["metadata"]["name"] for r in by_kind(none, "ClusterRole")
    }


def test_gateway_service_port_and_url(tmp_path: Path) -> None:
    docs = render({}, tmp_path)
    service = next(
        s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "safehold-gateway"
    )
    assert service["spec"]["ports"][0]["port"] == 8082
    (deployment,) = by_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--gateway-port=8082" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SAFEHOLD_GATEWAY_URL"] == "http://safehold-gateway.safehold-system.svc:8082"
    own = render({"gateway": {"url": "http://$(POD_IP):8082"}}, tmp_path)
    (deployment,) = by_kind(own, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    names = [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert env["SAFEHOLD_GATEWAY_URL"] == "http://$(POD_IP):8082"
    assert names.index("POD_IP") < names.index("SAFEHOLD_GATEWAY_URL")  # $(POD_IP) expands


# ------------------------------------------------------------------ alerts


def test_prometheus_rule_uses_the_operators_metrics(tmp_path: Path) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "noSuccessHours": 8}}}
    (rule,) = by_kind(render(values, tmp_path), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "SafeholdBackupFailing",
        "SafeholdRPOViolated",
        "SafeholdNoRecentSuccessfulBackup",
        "SafeholdLocationNotReady",
        "SafeholdDrillFailed",
        "SafeholdNoRecentSuccessfulDrill",
        "SafeholdRTOAboveTarget",
    }
    assert "8 hours" in alerts["SafeholdNoRecentSuccessfulBackup"]["annotations"]["summary"]
    assert "> 28800" in alerts["SafeholdNoRecentSuccessfulBackup"]["expr"]
    # Every metric an alert reads is one the operator exports (operator/safehold/engine/metrics.py).
    exported = set(
        re.findall(
            r'"(safehold_[a-z_]+)"', (REPO / "operator/safehold/engine/metrics.py").read_text()
        )
    )
    exported |= {f"{name}_total" for name in exported}
    for alert in alerts.values():
        used = set(re.findall(r"\bsafehold_[a-z_]+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported, (alert["alert"], used - exported)
    # Prometheus templates survive Helm's.
    assert "{{ $labels.policy }}" in alerts["SafeholdRPOViolated"]["annotations"]["description"]


def _alerts(values: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    (rule,) = by_kind(render(values, tmp_path), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_drill_alerts(tmp_path: Path) -> None:
    """Drill failed, no passed drill within noSuccessfulDrillDays, RTO above the target."""
    from prometheus_client import REGISTRY

    import safehold.engine.metrics  # noqa: F401 - registers the operator's metrics

    alerts = _alerts({"metrics": {"prometheusRule": {"enabled": True}}}, tmp_path)
    failed, stale = alerts["SafeholdDrillFailed"], alerts["SafeholdNoRecentSuccessfulDrill"]
    rto = alerts["SafeholdRTOAboveTarget"]
    assert failed["expr"].strip().endswith("== 0")
    assert "safehold_drill_last_result" in failed["expr"]
    assert "> 691200" in stale["expr"]  # the default: 8 days
    assert "8 days" in stale["annotations"]["summary"]
    assert re.search(r"safehold_drill_restore_seconds.*>\s*on \(namespace, policy\)", rto["expr"],
                     re.S)  # fmt: skip
    assert "safehold_policy_rto_target_seconds" in rto["expr"]
    for alert in (failed, stale, rto):
        assert 'policy!=""' in alert["expr"], alert["alert"]  # not drills of inline backups
        assert alert["labels"]["severity"] == "warning"
        assert "{{ $labels.policy }}" in alert["annotations"]["description"]
    # Every label an alert groups or matches on is a label of each metric it reads.
    labels = {
        name: set(collector._labelnames)
        for collector, names in REGISTRY._collector_to_names.items()
        for name in names
        if name.startswith("safehold_drill") or name.startswith("safehold_policy_rto")
    }
    for alert in (failed, stale, rto):
        grouped = {g.strip() for m in re.findall(r"(?:by|on) \(([^)]*)\)", alert["expr"])
                   for g in m.split(",")}  # fmt: skip
        for metric in re.findall(r"\bsafehold_[a-z_]+", alert["expr"]):
            assert grouped <= labels[metric], (alert["alert"], metric)

    custom = _alerts(
        {"metrics": {"prometheusRule": {"enabled": True, "noSuccessfulDrillDays": 15}}}, tmp_path
    )
    assert "> 1296000" in custom["SafeholdNoRecentSuccessfulDrill"]["expr"]


def test_service_monitor_scrapes_the_metrics_service(tmp_path: Path) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    docs = render(values, tmp_path)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    service = services["safehold-metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["labels"].items() >= selector.items()
    assert not services["safehold-gateway"]["metadata"]["labels"].items() >= selector.items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_service_monitor_without_service_fails(tmp_path: Path) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render_text(values, tmp_path)
    assert "needs metrics.service.enabled" in failed.value.stderr
