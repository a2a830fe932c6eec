"""Fixtures of the integration tier: one local cluster per test session (tools/localcluster).

Every test under tests/integration is marked `integration`. The cluster's work dir (logs of every
component and of every pod the node agent ran) is removed at the end of the session unless a
test failed; then it is kept and its path printed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import LocalCluster
from localcluster.csi_standin import CsiStandIn
from localcluster.helpers import kubectl
from localcluster.objects import apply, condition, location_docs, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, install_crds
from localcluster.sample_app import CRD_GROUP, WIDGET_CRD, app_objects, restic_check

log = logging.getLogger("tests.integration")

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _to_terminal(config: pytest.Config, lines: list[str]) -> None:
    """Print past pytest's output capture, so the lines show in the test log."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        for line in lines:
            print(line)
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            print(line, flush=True)


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    cluster.start()
    lines = [f"[localcluster] ready in {cluster.startup_seconds:.1f}s, work dir {cluster.workdir}"]
    lines += [f"[localcluster] {line}" for line in cluster.log_versions()]
    _to_terminal(request.config, ["", *lines])
    try:
        yield cluster
    finally:
        failed = request.session.testsfailed > 0
        cluster.stop(keep_workdir=failed)
        if failed:
            msg = f"[localcluster] tests failed: logs kept in {cluster.logs_dir}"
            log.warning(msg)
            _to_terminal(request.config, ["", msg])


@pytest.fixture(scope="session")
def kube_api(local_cluster: LocalCluster) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` configured for the cluster's admin kubeconfig."""
    api = local_cluster.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(local_cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace (its `default` ServiceAccount exists); deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    local_cluster.create_namespace(name)
    yield name
    try:
        local_cluster.kube.delete(f"/api/v1/namespaces/{name}")
    except Exception as exc:  # teardown must not mask the test result
        log.warning("deleting namespace %s failed: %s", name, exc)


@pytest.fixture(scope="session")
def crds_installed(local_cluster: LocalCluster) -> None:
    """The generated CRDs, applied to the real API server and Established."""
    install_crds(local_cluster)


@pytest.fixture(scope="session")
def operator(local_cluster: LocalCluster, crds_installed: None) -> Iterator[OperatorProcess]:
    """`safehold operator` running as a process for the whole session."""
    proc = OperatorProcess(local_cluster).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def csi(local_cluster: LocalCluster) -> Iterator[CsiStandIn]:
    """The test-only CSI stand-in: PVCs Bound, VolumeSnapshots taken (tests/README.md)."""
    standin = CsiStandIn(local_cluster).start()
    yield standin
    standin.stop()


@pytest.fixture(scope="session")
def widget_crd(local_cluster: LocalCluster) -> None:
    """The sample application's CRD (widgets.demo.example.com), Established."""
    apply(local_cluster, "default", WIDGET_CRD)
    kubectl(local_cluster, "wait", "--for=condition=Established", f"crd/widgets.{CRD_GROUP}")


@pytest.fixture(scope="session")
def ops_bucket(local_cluster: LocalCluster, operator: OperatorProcess) -> Iterator[str]:
    """A bucket behind a Ready location `main` in the operator's namespace; its repository
    must pass `restic check` after all the tests that wrote to it."""
    bucket = f"ops-{uuid.uuid4().hex[:8]}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, OPERATOR_NAMESPACE, *location_docs(local_cluster, "main", bucket))
    obj = wait_probed(local_cluster, OPERATOR_NAMESPACE, "main")
    assert (condition(obj, "Ready") or {}).get("status") == "True", obj.get("status")
    yield bucket
    restic_check(local_cluster, bucket, OPERATOR_NAMESPACE)


@pytest.fixture
def app(local_cluster: LocalCluster, widget_crd: None) -> Iterator[str]:
    """A namespace holding the sample application."""
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    apply(local_cluster, ns, *app_objects(ns))
    yield ns
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)
