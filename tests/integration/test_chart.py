"""The Helm chart's rendered manifests, applied with server-side dry run to the real API server:
the API server's own validation, admission (RBAC escalation checks, restricted Pod Security)
and the CRDs' structural schemas judge them. The offline checks are in tests/chart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helmchart import NON_DEFAULT, by_kind, helm_binary, render_text
from localcluster.cluster import LocalCluster
from localcluster.helpers import KubectlError, kubectl

pytestmark = pytest.mark.skipif(
    helm_binary() is None, reason="helm is missing: run `tools/bootstrap helm`"
)

# Minimal stand-ins for the Prometheus Operator's CRDs, so ServiceMonitor and PrometheusRule
# objects can be dry-run applied (their content is checked offline in tests/chart).
MONITORING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    )
]


def _dry_run(cluster: LocalCluster, namespace: str, docs: list[dict[str, Any]]) -> str:
    """Server-side dry-run apply; returns stderr (warnings)."""
    result = kubectl(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=safehold-chart-test",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )
    return result.stderr


@pytest.fixture
def restricted_namespace(local_cluster: LocalCluster, namespace: str) -> str:
    kubectl(
        local_cluster,
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    return namespace


@pytest.fixture
def extra_crds(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[None]:
    """Kopf's peering CRDs (from the chart) and the monitoring stand-ins, really installed."""
    values = {"replicas": 2, "crds": {"install": False}}
    peering = [
        d
        for d in by_kind(_docs(values, tmp_path, "x"), "CustomResourceDefinition")
        if d["spec"]["group"] == "kopf.dev"
    ]
    crds = MONITORING_CRDS + peering
    names = [c["metadata"]["name"] for c in crds]
    existing = set(
        kubectl(local_cluster, "get", "crd", "-o", "name")
        .stdout.replace("customresourcedefinition.apiextensions.k8s.io/", "")
        .split()
    )
    kubectl(local_cluster, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(crds))
    kubectl(
        local_cluster,
        "wait",
        "--for=condition=Established",
        *[f"crd/{n}" for n in names],
        "--timeout=60s",
    )
    try:
        yield
    finally:
        created = [f"crd/{n}" for n in names if n not in existing]
        if created:
            kubectl(local_cluster, "delete", "--wait=false", *created, check=False)


def _docs(values: dict[str, Any], tmp_path: Path, namespace: str) -> list[dict[str, Any]]:
    text = render_text(values, tmp_path, "--namespace", namespace)
    return [d for d in yaml.safe_load_all(text) if d]


def _assert_pod_template_admitted(cluster: LocalCluster, namespace: str, docs: list[Any]) -> None:
    """The operator's pod, as its Deployment would create it, passes `restricted` enforcement."""
    (deployment,) = by_kind(docs, "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-pod", "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    result = kubectl(
        cluster,
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(pod),
    )
    assert json.loads(result.stdout)["kind"] == "Pod"
    assert "PodSecurity" not in result.stderr, result.stderr


def test_default_values_pass_server_side_dry_run(
    local_cluster: LocalCluster, restricted_namespace: str, tmp_path: Path
) -> None:
    docs = _docs({}, tmp_path, restricted_namespace)
    assert by_kind(docs, "CustomResourceDefinition")
    warnings = _dry_run(local_cluster, restricted_namespace, docs)
    assert "PodSecurity" not in warnings, warnings
    _assert_pod_template_admitted(local_cluster, restricted_namespace, docs)
    # The namespace really enforces `restricted`: the same pod without seccomp is refused.
    (deployment,) = by_kind(docs, "Deployment")
    del deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"]
    with pytest.raises(KubectlError, match="PodSecurity"):
        _assert_pod_template_admitted(local_cluster, restricted_namespace, docs)


@pytest.mark.usefixtures("extra_crds")
def test_non_default_values_pass_server_side_dry_run(
    local_cluster: LocalCluster, restricted_namespace: str, tmp_path: Path
) -> None:
    values = {
        **NON_DEFAULT,
        "operator": {**NON_DEFAULT["operator"], "watchNamespaces": [restricted_namespace]},
    }
    docs = _docs(values, tmp_path, restricted_namespace)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "KopfPeering"} <= kinds
    warnings = _dry_run(local_cluster, restricted_namespace, docs)
    assert "PodSecurity" not in warnings, warnings
    _assert_pod_template_admitted(local_cluster, restricted_namespace, docs)
