"""Nothing lost, nothing stuck (issue #15), against the real API server, SeaweedFS and restic:
a reused Backup name never overwrites a good backup; two locations on one repository with two
passwords never both turn Ready; a store that stops turns its location not Ready at once; one
bad catalog entry does not stop the others; a manifest deleted from the bucket is noticed; an
HTTP server that is not S3 is named as such; long names work; a mover pod that cannot start
does not wait for its deadline; an operator killed while a mover runs resumes the run."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.databases import S3Store
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import (
    API,
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    wait_complete,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess
from localcluster.sample_app import restic_check

pytestmark = pytest.mark.usefixtures("operator")
JSON = dict[str, Any]


def reason(obj: JSON, kind: str = "Succeeded") -> str:
    return str((condition(obj, kind) or {}).get("reason"))


@pytest.fixture
def own(local_cluster: LocalCluster, app: str) -> Iterator[tuple[str, str]]:
    """The sample app's namespace with a Ready location `own` on a fresh bucket."""
    bucket = f"rb-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    apply(local_cluster, app, *location_docs(local_cluster, "own", bucket))
    assert (condition(wait_probed(local_cluster, app, "own"), "Ready") or {})["status"] == "True"
    return app, bucket


def resync(cluster: LocalCluster, namespace: str, name: str = "own") -> JSON:
    """Make a location probe (and sync its catalog) now: a spec change is a new generation."""
    location = get(cluster, namespace, "backupstoragelocation", name)
    period = "11s" if location["spec"].get("syncPeriod") != "11s" else "12s"
    patch = json.dumps({"spec": {"syncPeriod": period}})
    kubectl(cluster, "patch", "-n", namespace, "bsl", name, "--type=merge", "-p", patch)
    return wait_probed(cluster, namespace, name)


def restore_account(cluster: LocalCluster, ns: str) -> None:
    """The ServiceAccount a tenant's restore acts as, with the namespace's admin role."""
    apply(
        cluster,
        ns,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "safehold-restore"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "safehold-restore"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "safehold-restore", "namespace": ns}],
        },
    )


def manifest(cluster: LocalCluster, bucket: str, ns: str, name: str) -> JSON | None:
    key = f"backups/{ns}/{name}/backup.json"
    found = cluster.s3_client().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents")
    if not found:
        return None
    body = cluster.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    doc: JSON = json.loads(body)
    return doc


def test_a_reused_backup_name_never_overwrites_the_good_backup(
    local_cluster: LocalCluster, own: tuple[str, str]
) -> None:
    ns, bucket = own
    spec = {"storageLocation": "own", "selection": {"includedResources": ["configmaps"]}}
    first = create_and_wait(local_cluster, ns, "Backup", "reuse", spec)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    uid = first["metadata"]["uid"]
    kubectl(local_cluster, "delete", "-n", ns, "backup", "reuse")  # the data is kept
    again = create_and_wait(local_cluster, ns, "Backup", "reuse", {"storageLocation": "own"})
    assert reason(again) == "BackupNameInUse", again["status"]
    assert uid in (condition(again, "Succeeded") or {})["message"]
    kept = manifest(local_cluster, bucket, ns, "reuse")
    assert kept is not None
    assert (kept["uid"], kept["phase"]) == (uid, "Succeeded")
    # Deleting the refused run (as retention or a user would) leaves the old data alone.
    kubectl(
        local_cluster, "annotate", "-n", ns, "backup", "reuse", "safehold.io/delete-requested=true"
    )
    wait_for(
        lambda: (
            kubectl(local_cluster, "get", "-n", ns, "backup", "reuse", check=False).returncode != 0
        ),
        60,
        "the refused Backup to be deleted",
    )
    assert (manifest(local_cluster, bucket, ns, "reuse") or {}).get("uid") == uid
    # The catalog gives the good backup back, and it restores.
    resync(local_cluster, ns)
    found = wait_for(lambda: _complete(local_cluster, ns, "reuse"), 60, "re-discovery")
    assert found["status"]["phase"] == "Succeeded"
    assert found["status"]["runUid"] == uid
    kubectl(local_cluster, "delete", "-n", ns, "configmap", "settings")
    restore_account(local_cluster, ns)
    restored = create_and_wait(
        local_cluster, ns, "RestoreRequest", "from-reuse", {"backupRef": {"name": "reuse"}}
    )
    assert restored["status"]["counts"]["created"] >= 1, restored["status"]
    assert get(local_cluster, ns, "configmap", "settings")["data"]["mode"] == "production"


def _complete(cluster: LocalCluster, ns: str, name: str) -> JSON | None:
    found = kubectl(cluster, "get", "-n", ns, "backup", name, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    obj: JSON = json.loads(found.stdout)
    return obj if condition(obj, "Complete") else None


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_two_locations_on_one_repository_with_two_passwords(
    local_cluster: LocalCluster, namespace: str, attempt: int
) -> None:
    bucket = f"two-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    port = local_cluster.s3_endpoint.rsplit(":", 1)[1]
    one = location_docs(local_cluster, "one", bucket, password="first-password")
    other = location_docs(
        local_cluster,
        "other",
        bucket,
        password="second-password",
        endpoint=f"http://localhost:{port}",
    )
    apply(local_cluster, namespace, *one, *other)  # both at once: their probes race
    states = [
        condition(wait_probed(local_cluster, namespace, n), "Ready") or {} for n in ("one", "other")
    ]
    ready = [s["status"] for s in states]
    assert sorted(ready) == ["False", "True"], states
    refused = states[ready.index("False")]
    assert refused["reason"] == "RepositoryPasswordWrong", refused
    winner = ("one", "other")[ready.index("True")]
    done = create_and_wait(
        local_cluster, namespace, "Backup", f"b{attempt}", {"storageLocation": winner}
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    password = "first-password" if winner == "one" else "second-password"
    restic_check(local_cluster, bucket, namespace, password=password)


def test_a_store_that_stops_turns_its_location_not_ready_at_once(
    local_cluster: LocalCluster, namespace: str
) -> None:
    store = S3Store(bucket="flaky").start()
    try:
        docs = location_docs(
            local_cluster,
            "flaky",
            "flaky",
            endpoint=store.seaweed.endpoint_url,
            access_key=store.seaweed.access_key,
            secret_key=store.seaweed.secret_key,
        )
        apply(local_cluster, namespace, *docs)
        probed = wait_probed(local_cluster, namespace, "flaky")
        assert (condition(probed, "Ready") or {})["status"] == "True", probed["status"]
    finally:
        store.stop()
    done = create_and_wait(local_cluster, namespace, "Backup", "down", {"storageLocation": "flaky"})
    assert reason(done) == "EndpointUnreachable", done["status"]
    message = (condition(done, "Succeeded") or {})["message"]
    assert store.seaweed.endpoint_url in message
    assert "bucket flaky" in message
    # At once, not at the next probe (its sync period is five minutes).
    location = get(local_cluster, namespace, "backupstoragelocation", "flaky")
    assert (condition(location, "Ready") or {})["status"] == "False", location["status"]
    assert reason(location, "Ready") == "EndpointUnreachable"


def test_one_bad_catalog_entry_does_not_stop_the_sync(
    local_cluster: LocalCluster, own: tuple[str, str], operator: OperatorProcess
) -> None:
    ns, bucket = own
    good = create_and_wait(local_cluster, ns, "Backup", "good", {"storageLocation": "own"})
    assert good["status"]["phase"] == "Succeeded", good["status"]
    kubectl(local_cluster, "delete", "-n", ns, "backup", "good")
    s3 = local_cluster.s3_client()
    s3.put_object(Bucket=bucket, Key=f"backups/{ns}/junk/backup.json", Body=b"{not json")
    liar = manifest(local_cluster, bucket, ns, "good") or {}
    liar |= {"name": "somebody-else"}
    s3.put_object(
        Bucket=bucket, Key=f"backups/{ns}/liar/backup.json", Body=json.dumps(liar).encode()
    )
    resync(local_cluster, ns)
    back = wait_for(lambda: _complete(local_cluster, ns, "good"), 60, "the good Backup back")
    assert back["status"]["phase"] == "Succeeded"
    junk = wait_for(lambda: _complete(local_cluster, ns, "junk"), 30, "the junk entry reported")
    assert (junk["status"]["phase"], reason(junk)) == ("Failed", "ManifestInvalid")
    lie = wait_for(lambda: _complete(local_cluster, ns, "liar"), 30, "the liar entry reported")
    assert reason(lie) == "ManifestOutOfScope"
    events = kubectl(
        local_cluster,
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=own",
        "-o",
        "json",
    ).stdout
    assert "ManifestInvalid" in events
    assert "ManifestOutOfScope" in events
    metric = f'safehold_catalog_invalid_manifests{{location="own",namespace="{ns}"}} 2.0'
    lines = [m for m in operator.metrics().splitlines() if "invalid_manifests" in m]
    assert metric in lines, lines
    log = operator.log_text()
    assert "Traceback" not in log[-20000:] or "catalog sync" not in log[-20000:]


def test_a_manifest_deleted_from_the_bucket_is_noticed(
    local_cluster: LocalCluster, own: tuple[str, str]
) -> None:
    ns, bucket = own
    done = create_and_wait(local_cluster, ns, "Backup", "lost", {"storageLocation": "own"})
    assert reason(done, "Restorable") == "InCatalog"
    local_cluster.s3_client().delete_object(Bucket=bucket, Key=f"backups/{ns}/lost/backup.json")
    resync(local_cluster, ns)

    def noticed() -> JSON | None:
        obj = get(local_cluster, ns, "backup", "lost")
        return obj if reason(obj, "Restorable") == "ManifestMissing" else None

    obj = wait_for(noticed, 30, "the Backup to say its manifest is gone")
    assert (condition(obj, "Restorable") or {})["status"] == "False"
    refused = create_and_wait(
        local_cluster, ns, "RestoreRequest", "from-lost", {"backupRef": {"name": "lost"}}
    )
    assert reason(refused) == "BackupNotRestorable"
    assert (
        "no longer has this backup's manifest" in (condition(refused, "Succeeded") or {})["message"]
    )


def test_an_http_server_that_is_not_s3_is_named_as_such(
    local_cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    docs = location_docs(
        local_cluster, "web", "some-bucket", endpoint=f"http://127.0.0.1:{operator.metrics_port}"
    )
    apply(local_cluster, namespace, *docs)
    probed = wait_probed(local_cluster, namespace, "web")
    assert reason(probed, "Ready") == "NotAnS3Endpoint", probed["status"]


def test_long_names_work(local_cluster: LocalCluster, ops_bucket: str) -> None:
    ns = f"long-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    apply(
        local_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data-" + "x" * 60},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    (local_cluster.pvc_path(ns, "data-" + "x" * 60) / "f.txt").write_text("long\n")
    name = "b-" + "long-name-" * 10 + ns
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [ns]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    done = create_and_wait(local_cluster, OPS, "Backup", name, spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["volumes"][0]["result"] == "Succeeded"
    back = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        "r-" + "long-name-" * 10 + ns,
        {"backupRef": {"name": name}, "namespaceMapping": {ns: f"{ns}-copy"}},
        timeout=240,
    )
    assert back["status"]["phase"] == "Succeeded", back["status"]
    kubectl(local_cluster, "delete", "namespace", ns, f"{ns}-copy", "--wait=false")


def test_a_mover_pod_that_cannot_start_ends_its_job(
    local_cluster: LocalCluster, namespace: str
) -> None:
    from safehold.kube.jobs import start_mover, wait_mover
    from safehold.kube.rest import Rest
    from safehold.planning.builders import MoverPod, MoverSpec

    rest = Rest(local_cluster.api_client())
    spec = MoverSpec(
        name="stuck",
        namespace=namespace,
        verb="volume-backup",
        env={},
        secret_name="stuck",
        secret_keys=["A_KEY_THE_SECRET_LACKS"],
        pod=MoverPod(deadline_seconds=3600),
    )
    start_mover(rest, spec, {"SOMETHING": "else"})
    outcome = wait_mover(rest, spec, poll=0.5, stuck_after=5)
    assert outcome.reason == "MoverCannotStart", outcome
    assert "CreateContainerConfigError" in outcome.message
    wait_for(
        lambda: (
            kubectl(local_cluster, "get", "-n", namespace, "job", "stuck", check=False).returncode
            != 0
        ),
        60,
        "the Job to be deleted",
    )


@pytest.mark.parametrize("phase", ["backup", "restore"])
def test_an_operator_killed_while_a_mover_runs_resumes_the_run(
    local_cluster: LocalCluster, operator: OperatorProcess, ops_bucket: str, phase: str
) -> None:
    ns = f"kill-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(local_cluster, ns, pvc)
    data = local_cluster.pvc_path(ns, "data")
    for i in range(3):
        (data / f"blob-{i}.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    name = f"kill-{ns}"
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [ns], "includedResources": ["persistentvolumeclaims"]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    kind, run = "Backup", name
    if phase == "restore":
        done = create_and_wait(local_cluster, OPS, "Backup", name, spec, timeout=240)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        for f in data.iterdir():
            f.unlink()
        kind, run = "RestoreRequest", f"{name}-rs"
        spec = {"backupRef": {"name": name}, "volumes": {"overwriteExisting": True}}
    apply(
        local_cluster,
        OPS,
        {"apiVersion": API, "kind": kind, "metadata": {"name": run}, "spec": spec},
    )

    def mover_running() -> bool:
        pods = json.loads(kubectl(local_cluster, "get", "pods", "-n", ns, "-o", "json").stdout)[
            "items"
        ]
        return any((p.get("status") or {}).get("phase") == "Running" for p in pods)

    wait_for(mover_running, 60, "the mover pod to run", interval=0.1)
    operator.crash_and_restart()
    finished = wait_complete(local_cluster, OPS, kind.lower(), run, timeout=300)
    assert finished["status"]["phase"] == "Succeeded", finished["status"]
    assert finished["status"]["volumes"][0]["result"] == "Succeeded", finished["status"]
    jobs = json.loads(kubectl(local_cluster, "get", "jobs", "-n", ns, "-o", "json").stdout)["items"]
    for job in jobs:  # none left waiting
        states = {
            c["type"]
            for c in (job.get("status") or {}).get("conditions") or []
            if c["status"] == "True"
        }
        assert states & {"Complete", "Failed"}, job["metadata"]["name"]
    if phase == "restore":
        assert sorted(f.name for f in data.iterdir()) == ["blob-0.bin", "blob-1.bin", "blob-2.bin"]
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false")
