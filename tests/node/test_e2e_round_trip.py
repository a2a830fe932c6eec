"""End-to-end round trip on the real node: the operator installed from the Helm chart, in a pod.

backup → delete the application namespace (and wipe its volume) → restore, all on a real kubelet
(`localcluster.node.RealNode`): the operator runs from our image in a pod installed by
`helm template` + `kubectl apply`, talks to the API server with its ServiceAccount, and starts
mover Jobs that run as restricted pods of our image. The application namespace (restricted Pod
Security) holds a ConfigMap, a Secret, a Deployment (0 replicas), a Service, a hostPath-backed
PVC with files and a PostgreSQL 15 server in a pod (Debian's package, `tools/image postgres`)
running as the postgres UID under the restricted profile. The Backup runs a pre-backup exec hook
in the PostgreSQL pod (CHECKPOINT, then a marker file the test reads).

Opt-in, root only:

    make image-save && tools/image postgres     # build/image/{safehold,postgres}-oci.tar
    SAFEHOLD_REAL_NODE_E2E=1 .venv/bin/pytest -p no:cacheprovider -s \
        tests/node/test_e2e_round_trip.py

Skipped unless SAFEHOLD_REAL_NODE_E2E=1; with it set, missing prerequisites (root, the node
tools, the two archives) fail instead of skipping. About two minutes warm.

What this node does not have, and how the test goes around it:
- no cluster DNS and no kube-proxy (RealNode DNATs only the `kubernetes` Service). A database
  target naming a Service (`service: {name: postgres}`) becomes `postgres.<ns>.svc`, which no
  pod here can resolve, and ClusterIPs other than the API server's do not route. So the target
  names the PostgreSQL **pod IP** as `host`.
- the restored PostgreSQL pod has a new IP and starts empty, after the restore has applied it.
  The restore therefore runs in two steps, as a runbook would: the objects and the volume data
  (`databases.enabled: false`), then, once the server is ready, the database with its `host`
  overridden to the new pod IP.
- S3 (SeaweedFS on the host's loopback) is reached from pods through
  `RealNode.expose_loopback_port` (the bridge gateway); the location's endpoint is that address,
  used alike by the operator pod and the mover pods.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.node import RealNode, start_workload_controllers, unavailable_reason
from localcluster.objects import apply, condition, get, location_docs, wait_complete, wait_probed

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/safehold:dev"
PG_IMAGE = "localhost/safehold-postgres:15"
ARCHIVE = REPO / "build" / "image" / "safehold-oci.tar"
PG_ARCHIVE = REPO / "build" / "image" / "postgres-oci.tar"
REQUESTED = os.environ.get("SAFEHOLD_REAL_NODE_E2E", "") == "1"
OPS = "safehold-system"
APP = "shop"
PG_UID = 999
PG_PASSWORD = "e2e-postgres-password"  # a throwaway server inside the test


def _missing() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    if not ARCHIVE.is_file():
        return f"{ARCHIVE} missing: run `make image-save`"
    if not PG_ARCHIVE.is_file():
        return f"{PG_ARCHIVE} missing: run `tools/image postgres`"
    try:
        import helmchart  # noqa: F401
    except ImportError:
        return "tools/helmchart.py is not importable"
    from helmchart import helm_binary

    if helm_binary() is None:
        return "helm missing: run `tools/bootstrap helm`"
    return None


_REASON = None if not REQUESTED else _missing()
pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(
        not REQUESTED, reason="real-node end-to-end round trip is opt-in (SAFEHOLD_REAL_NODE_E2E=1)"
    ),
]


def _restricted_namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


@pytest.fixture(scope="module")
def node() -> Iterator[RealNode]:
    if _REASON is not None:
        pytest.fail(f"SAFEHOLD_REAL_NODE_E2E=1 but the round trip cannot run: {_REASON}")
    keep = os.environ.get("SAFEHOLD_KEEP_WORKDIR") == "1"  # component logs, for debugging
    with LocalCluster(node_agent=False, keep_workdir=keep) as cluster, RealNode(cluster) as real:
        # The harness's controller manager has no Deployment controllers; the chart needs them.
        start_workload_controllers(real)
        real.import_image(ARCHIVE)
        real.import_image(PG_ARCHIVE)
        yield real


def _install_operator(node: RealNode, tmp: Path) -> None:
    """`helm template` the chart with our image and apply it with kubectl (server-side)."""
    from helmchart import render_text

    cluster = node.cluster
    cluster.kube.post("/api/v1/namespaces", _restricted_namespace(OPS))
    values = {
        "image": {"repository": "localhost/safehold", "tag": "dev", "pullPolicy": "Never"},
        "movers": {"image": IMAGE},
        # Small enough for any test machine.
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }
    rendered = render_text(values, tmp)
    kubectl(cluster, "apply", "--server-side", "-f", "-", stdin=rendered, timeout=120)
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "CustomResourceDefinition":
            kubectl(
                cluster, "wait", "--for=condition=Established", f"crd/{doc['metadata']['name']}"
            )
    deployment = next(
        d["metadata"]["name"]
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Deployment"
    )
    kubectl(
        cluster, "-n", OPS, "rollout", "status", f"deployment/{deployment}", "--timeout=180s",
        timeout=200,
    )  # fmt: skip


def _pv(name: str, path: Path, namespace: str, claim: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "realnode-static",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

PG_START = """set -e
export PGDATA=/var/lib/postgresql/data/pg
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\\n' "$POSTGRES_PASSWORD" > /tmp/pw
  initdb -D "$PGDATA" -U postgres --pwfile=/tmp/pw --auth-local=trust \\
    --auth-host=scram-sha-256 >/tmp/initdb.log
  rm -f /tmp/pw
  echo 'host all all 0.0.0.0/0 scram-sha-256' >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
"""


def _app_docs() -> list[dict[str, Any]]:
    labels = {"app": "postgres"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"mode": "production", "greeting": "hello from the round trip"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "postgres"},
            "stringData": {"username": "postgres", "password": PG_PASSWORD},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-static",
                "volumeName": "e2e-data",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                        "containers": [
                            {
                                "name": "web",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["sleep", "infinity"],
                                "securityContext": RESTRICTED,
                                "envFrom": [{"configMapRef": {"name": "settings"}}],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "postgres"},
            "spec": {"selector": labels, "ports": [{"port": 5432, "targetPort": 5432}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "postgres"},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": PG_UID,
                            "runAsGroup": PG_UID,
                            "fsGroup": PG_UID,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "postgres",
                                "image": PG_IMAGE,
                                "imagePullPolicy": "Never",
                                "command": ["sh", "-c", PG_START],
                                "env": [
                                    {
                                        "name": "POSTGRES_PASSWORD",
                                        "valueFrom": {
                                            "secretKeyRef": {"name": "postgres", "key": "password"}
                                        },
                                    }
                                ],
                                "ports": [{"containerPort": 5432}],
                                "readinessProbe": {
                                    "exec": {
                                        "command": ["pg_isready", "-h", "/var/run/postgresql"]
                                    },
                                    "periodSeconds": 1,
                                },
                                "securityContext": RESTRICTED,
                                "volumeMounts": [
                                    {"name": "pgdata", "mountPath": "/var/lib/postgresql/data"},
                                    {"name": "run", "mountPath": "/var/run/postgresql"},
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "pgdata", "emptyDir": {}},
                            {"name": "run", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
    ]


def _postgres_pod(cluster: LocalCluster, timeout: float = 180) -> dict[str, Any]:
    """The running, ready PostgreSQL pod of the application namespace."""

    def ready() -> dict[str, Any] | None:
        out = kubectl(cluster, "-n", APP, "get", "pods", "-l", "app=postgres", "-o", "json")
        for pod in json.loads(out.stdout)["items"]:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            status = pod.get("status", {})
            conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
            if status.get("phase") == "Running" and conds.get("Ready") == "True":
                return dict(pod)
        return None

    return wait_for(ready, timeout, "a ready PostgreSQL pod", interval=0.5)


def _psql(cluster: LocalCluster, pod: str, sql: str, db: str = "shop") -> str:
    out = kubectl(
        cluster, "-n", APP, "exec", pod, "-c", "postgres", "--", "psql", "-v",
        "ON_ERROR_STOP=1", "-h", "/var/run/postgresql", "-U", "postgres", "-d", db, "-Atc", sql,
    )  # fmt: skip
    return out.stdout.strip()


CHECKSUM_SQL = (
    "SELECT count(*) || ' ' || md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM items"
)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _step(timings: dict[str, float], name: str, started: float) -> float:
    now = time.monotonic()
    timings[name] = round(now - started, 1)
    return now


def test_backup_delete_restore_round_trip(node: RealNode, tmp_path: Path) -> None:
    cluster = node.cluster
    timings: dict[str, float] = {}
    t = time.monotonic()

    # ---------------------------------------------------------------- the operator, from the chart
    _install_operator(node, tmp_path)
    (operator_pod,) = json.loads(kubectl(cluster, "-n", OPS, "get", "pods", "-o", "json").stdout)[
        "items"
    ]
    assert operator_pod["spec"]["serviceAccountName"] == "safehold"
    assert operator_pod["spec"]["containers"][0]["image"] == IMAGE
    t = _step(timings, "install operator (chart)", t)
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_bucket(bucket)
    port = urllib.parse.urlparse(cluster.s3_endpoint_url).port
    assert port is not None
    endpoint = f"http://{node.expose_loopback_port(port)}"
    apply(cluster, OPS, *location_docs(cluster, "primary", bucket, endpoint=endpoint))
    loc = wait_probed(cluster, OPS, "primary", timeout=120)
    assert (condition(loc, "Ready") or {}).get("status") == "True", loc.get("status")
    t = _step(timings, "location Ready", t)

    # ---------------------------------------------------------------- the application
    data = node.root / "volumes" / "e2e-data"
    (data / "sub").mkdir(parents=True)
    (data / "hello.txt").write_text("hello from a real node\n")
    (data / "sub" / "blob.bin").write_bytes(os.urandom(256 * 1024))
    (data / "sub" / "big.bin").write_bytes(os.urandom(8 << 20))
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    before_files = _tree(data)
    cluster.kube.post("/api/v1/namespaces", _restricted_namespace(APP))
    cluster.wait_for_service_account(APP, "default")
    cluster.kube.post("/api/v1/persistentvolumes", _pv("e2e-data", data, APP, "data"))
    apply(cluster, APP, *_app_docs())
    pg = _postgres_pod(cluster)
    pg_name, pg_ip = pg["metadata"]["name"], pg["status"]["podIP"]
    _psql(cluster, pg_name, "CREATE DATABASE shop", db="postgres")
    _psql(
        cluster,
        pg_name,
        "CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);"
        " INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    )
    before_rows = _psql(cluster, pg_name, CHECKSUM_SQL)
    assert before_rows.startswith("5000 ")
    # The Backup's namespace holds the database credentials its target names.
    apply(
        cluster,
        OPS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-postgres"},
            "stringData": {"username": "postgres", "password": PG_PASSWORD},
        },
    )
    t = _step(timings, "application up", t)

    # ---------------------------------------------------------------- backup
    hook = (
        "psql -h /var/run/postgresql -U postgres -d shop -Atc CHECKPOINT >/dev/null"
        " && date +%s > /tmp/safehold-pre-backup && echo checkpointed"
    )
    apply(
        cluster,
        OPS,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": "shop-e2e"},
            "spec": {
                "storageLocation": "primary",
                "selection": {"namespaces": [APP], "includeClusterResources": True},
                "volumes": {"rules": [{"mode": "filesystem"}]},
                "databases": [
                    {
                        "name": "orders",
                        "type": "postgresql",
                        # No cluster DNS or kube-proxy here: the pod IP (module docstring).
                        "host": pg_ip,
                        "credentialsSecret": {"name": "shop-postgres"},
                        "databases": ["shop"],
                        "tls": {"mode": "disable"},
                    }
                ],
                "hooks": {
                    "pre": [
                        {
                            "name": "checkpoint",
                            "podSelector": {"matchLabels": {"app": "postgres"}},
                            "container": "postgres",
                            "command": ["sh", "-c", hook],
                            "timeoutSeconds": 60,
                            "onError": "Fail",
                        }
                    ]
                },
            },
        },
    )
    backup = wait_complete(cluster, OPS, "backup", "shop-e2e", timeout=300)
    status = backup["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert not status.get("warnings"), status.get("warnings")
    (vol,) = status["volumes"]
    assert (vol["pvc"], vol["result"], vol["files"]) == ("data", "Succeeded", 3), vol
    (db,) = status["databases"]
    assert (db["target"], db["result"], db["databases"]) == ("orders", "Succeeded", ["shop"]), db
    marker = kubectl(cluster, "-n", APP, "exec", pg_name, "--", "cat", "/tmp/safehold-pre-backup")
    assert marker.stdout.strip().isdigit(), marker.stdout
    t = _step(timings, "backup", t)

    # ---------------------------------------------------------------- disaster
    kubectl(cluster, "delete", "namespace", APP, "--wait=true", "--timeout=180s", timeout=200)
    kubectl(cluster, "delete", "pv", "e2e-data", "--wait=true", "--timeout=60s", timeout=80)
    shutil.rmtree(data)
    data.mkdir()
    os.chown(data, 65532, 65532)  # the mover writes as the recorded owner (no pod used it)
    cluster.kube.post("/api/v1/persistentvolumes", _pv("e2e-data", data, APP, "data"))
    t = _step(timings, "namespace deleted, volume wiped", t)

    # ---------------------------------------------------------------- restore, step 1
    apply(
        cluster,
        OPS,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "shop-e2e-objects"},
            "spec": {
                "backupRef": {"name": "shop-e2e"},
                "includedNamespaces": [APP],
                "databases": {"enabled": False},
            },
        },
    )
    restore = wait_complete(cluster, OPS, "restorerequest", "shop-e2e-objects", timeout=300)
    assert restore["status"]["phase"] == "Succeeded", json.dumps(restore["status"], indent=1)
    assert get(cluster, APP, "configmap", "settings")["data"]["mode"] == "production"
    assert get(cluster, APP, "deployment", "web")["spec"]["replicas"] == 0
    assert get(cluster, APP, "service", "postgres")["spec"]["ports"][0]["port"] == 5432
    secret = get(cluster, APP, "secret", "postgres")
    assert secret["data"]["password"]  # values checked by the database login below
    assert _tree(data) == before_files
    t = _step(timings, "restore objects + volume", t)

    # ---------------------------------------------------------------- restore, step 2
    pg = _postgres_pod(cluster)
    pg_name, pg_ip = pg["metadata"]["name"], pg["status"]["podIP"]
    # The new server starts empty: the data must come from the repository.
    assert not _psql(cluster, pg_name, "SELECT 1 FROM pg_database WHERE datname='shop'", "postgres")
    apply(
        cluster,
        OPS,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "shop-e2e-database"},
            "spec": {
                "backupRef": {"name": "shop-e2e"},
                "includedNamespaces": [APP],
                "includedResources": ["configmaps"],
                "volumes": {"enabled": False},
                "databases": {"targets": [{"target": "orders", "host": pg_ip}]},
            },
        },
    )
    restore = wait_complete(cluster, OPS, "restorerequest", "shop-e2e-database", timeout=300)
    assert restore["status"]["phase"] == "Succeeded", json.dumps(restore["status"], indent=1)
    assert _psql(cluster, pg_name, CHECKSUM_SQL) == before_rows
    # The operator pod did all this without restarting.
    operator_pod = get(cluster, OPS, "pod", operator_pod["metadata"]["name"])
    assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0
    _step(timings, "restore database", t)
    print("round trip timings (s):", json.dumps(timings))
