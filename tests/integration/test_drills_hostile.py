"""Hostile tests of restore drills (BackupVerification): what a drill restores must stay
harmless, its verdict must be about the backup (not about the drill's own limits), its limits
must hold, and it must end and leave nothing behind whatever happens to it while it runs.

Each of these failed on the first version of drills (found by a hostile tester) and passes
now."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.csi_standin import CsiStandIn
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import API, apply, create_and_wait, get, location_docs, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.trees import make_tree
from safehold.api.labels import LABEL_POD_SECURITY_ENFORCE, LABEL_VOLUME_MOVER

pytestmark = pytest.mark.usefixtures("operator", "ops_bucket")
JSON = dict[str, Any]


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


@pytest.fixture
def ns(local_cluster: LocalCluster, csi: CsiStandIn) -> Iterator[str]:
    name = f"hst-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(name)
    apply(
        local_cluster,
        name,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
         "data": {"mode": "production"}},
        _pvc("data"),
    )  # fmt: skip
    data = local_cluster.pvc_path(name, "data")
    (data / "orders.csv").write_text("".join(f"{i},item-{i}\n" for i in range(2000)))
    yield name
    kubectl(local_cluster, "delete", "namespace", name, "--wait=false", check=False)


def _backup(cluster: LocalCluster, ns: str, name: str, mode: str = "filesystem") -> JSON:
    spec = {"storageLocation": "main", "selection": {"namespaces": [ns]},
            "volumes": {"rules": [{"mode": mode}]}}  # fmt: skip
    done = create_and_wait(cluster, OPS, "Backup", name, spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    return done


def _start(cluster: LocalCluster, name: str, spec: JSON, namespace: str = OPS) -> None:
    apply(
        cluster,
        namespace,
        {"apiVersion": API, "kind": "BackupVerification", "metadata": {"name": name},
         "spec": spec},
    )  # fmt: skip


def _drill(cluster: LocalCluster, name: str, spec: JSON, timeout: float = 300) -> JSON:
    return create_and_wait(cluster, OPS, "BackupVerification", name, spec, timeout=timeout)


def _status(cluster: LocalCluster, name: str, namespace: str = OPS) -> JSON:
    found = kubectl(cluster, "get", "-n", namespace, "backupverification", name, "-o", "json",
                    check=False)  # fmt: skip
    if found.returncode != 0:
        return {}
    return json.loads(found.stdout).get("status") or {}


def _message(status: JSON) -> str:
    return next(
        (c.get("message", "") for c in status.get("conditions") or [] if c["type"] == "Succeeded"),
        "",
    )


def _probing(cluster: LocalCluster, name: str) -> list[str] | None:
    """The drill's scratch namespaces once it runs its probe."""
    status = _status(cluster, name)
    return status.get("scratchNamespaces") if "probe" in _message(status) else None


def _ended(cluster: LocalCluster, name: str) -> JSON | None:
    status = _status(cluster, name)
    return status if status.get("completionTime") else None


def _checks(drill: JSON) -> dict[str, JSON]:
    return {c["name"]: c for c in drill["status"].get("checks") or []}


def _namespace_exists(cluster: LocalCluster, name: str) -> bool:
    return kubectl(cluster, "get", "namespace", name, "-o", "name", check=False).returncode == 0


def _verification(cluster: LocalCluster, backup: str) -> JSON:
    return (get(cluster, OPS, "backup", backup).get("status") or {}).get("verification") or {}


def _scratch_left(cluster: LocalCluster, prefix: str) -> list[str]:
    out = kubectl(cluster, "get", "namespaces", "-o", "name").stdout.split()
    return [n.removeprefix("namespace/") for n in out if n.startswith(f"namespace/shv-{prefix}")]


# --------------------------------------------------------------------- harmless restored objects
def test_a_drill_never_lets_a_restored_policy_run_backups_from_the_scratch_namespace(
    local_cluster: LocalCluster, ns: str
) -> None:
    """BackupPolicies and BackupStorageLocations of the backed-up namespace were restored into
    the scratch namespace, and the operator then ran the policy there: Backups in the scratch
    namespace wrote into the bucket. A drill must never write into a repository or start
    runs."""
    bucket = f"tenant-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    access, secret_key = local_cluster.s3_tenant_keys
    docs = location_docs(
        local_cluster, "own", bucket, access_key=access, secret_key=secret_key, password="pw"
    )
    apply(local_cluster, ns, *docs)
    wait_probed(local_cluster, ns, "own")
    apply(
        local_cluster,
        ns,
        {"apiVersion": API, "kind": "BackupPolicy",
         "metadata": {"name": "every-minute"},
         "spec": {"storageLocation": "own", "schedule": "* * * * *"}},
    )  # fmt: skip
    name = f"pol-{ns}"
    _backup(local_cluster, ns, name)
    # The source's own policy must not disturb the picture: stop it now.
    kubectl(local_cluster, "delete", "backuppolicy", "-n", ns, "every-minute")
    slow = {"name": "slow", "image": "busybox", "command": ["sh", "-c", "sleep 100"],
            "timeoutSeconds": 300}  # fmt: skip
    _start(local_cluster, name, {"backupRef": {"name": name},
                                 "checks": {"repository": False, "probes": [slow]}})  # fmt: skip
    scratch = wait_for(
        lambda: _probing(local_cluster, name),
        180,
        "the drill to run its probe",
    )[0]
    policies = kubectl(local_cluster, "get", "backuppolicies,backupstoragelocations", "-n",
                       scratch, "-o", "name").stdout.split()  # fmt: skip
    seen: set[str] = set()
    deadline = time.monotonic() + 95
    while time.monotonic() < deadline and _namespace_exists(local_cluster, scratch):
        out = kubectl(local_cluster, "get", "backups", "-n", scratch, "-o", "name", check=False)
        seen |= set(out.stdout.split())
        time.sleep(3)
    listed = local_cluster.s3_client().list_objects_v2(Bucket=bucket)
    keys = [o["Key"] for o in listed.get("Contents", []) if scratch in o["Key"]]
    wait_for(lambda: _status(local_cluster, name).get("completionTime"), 240, "drill end")
    found = {"restored policies/locations": policies, "Backups in the scratch namespace":
             sorted(seen), "bucket keys of the scratch namespace": keys[:5]}  # fmt: skip
    assert not any(found.values()), f"{scratch}: {found}"


# ----------------------------------------------------------------------------- wrong verdicts
def test_a_drill_of_a_healthy_snapshot_mode_backup_does_not_mark_it_corrupt(
    local_cluster: LocalCluster, ns: str
) -> None:
    """A snapshot-mode volume cannot be restored into a scratch namespace (a VolumeSnapshot
    restores only into its own namespace); it once failed the content check with a "damage"
    reason and marked the healthy Backup Corrupt. A limitation of the drill is never Corrupt:
    the PVC is left out with a warning."""
    name = f"snap-{ns}"
    done = _backup(local_cluster, ns, name, mode="snapshot")
    assert done["status"]["volumes"][0]["result"] == "Succeeded", done["status"]
    drill = _drill(local_cluster, name, {"backupRef": {"name": name},
                                         "checks": {"repository": False}})  # fmt: skip
    checks = _checks(drill)
    verdict = _verification(local_cluster, name)
    assert verdict.get("result") != "Corrupt", (verdict, checks)
    assert any("snapshot-mode" in w for w in drill["status"]["warnings"]), drill["status"]


def test_a_drill_of_a_root_mover_backup_does_not_mark_it_corrupt(
    local_cluster: LocalCluster, csi: CsiStandIn
) -> None:
    """A volume of several owners, backed up by the root mover (namespace opened to it by an
    admin): the scratch namespace is restricted, so the drill restores it as UID 65532. The
    drill may fail, but it must not call the healthy backup Corrupt."""
    ns = f"hsr-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(
        ns, labels={LABEL_POD_SECURITY_ENFORCE: "baseline", LABEL_VOLUME_MOVER: "root"}
    )
    try:
        apply(local_cluster, ns, _pvc("data"))
        make_tree(local_cluster.pvc_path(ns, "data"), small_files=5, large_mib=1,
                  other_owners=True)  # fmt: skip
        name = f"root-{ns}"
        _backup(local_cluster, ns, name)
        drill = _drill(local_cluster, name, {"backupRef": {"name": name},
                                             "checks": {"repository": False}})  # fmt: skip
        verdict = _verification(local_cluster, name)
        assert verdict.get("result") != "Corrupt", (verdict, _checks(drill))
    finally:
        kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


# ---------------------------------------------------------------------------------- bad input
def test_names_at_63_characters_drill_and_clean_up(
    local_cluster: LocalCluster, csi: CsiStandIn
) -> None:
    """A source namespace of 63 characters, a drill name of 63 (the CRD's limit) and a probe
    name of 57 (the schema's limit, its Job being probe-<name>): the drill runs all of it. A
    probe name of 58 is refused by the API server (it once failed later, ProbeNotStarted)."""
    ns = ("hs63-" + uuid.uuid4().hex * 3)[:63]
    local_cluster.create_namespace(ns)
    try:
        apply(local_cluster, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "settings"}, "data": {"a": "b"}},
              _pvc("data"))  # fmt: skip
        (local_cluster.pvc_path(ns, "data") / "f.txt").write_text("hello\n")
        backup = ("b-" + uuid.uuid4().hex * 2)[:63]
        _backup(local_cluster, ns, backup)
        name = ("d-" + uuid.uuid4().hex * 2)[:63]
        too_long = {"name": "p" * 58, "image": "busybox", "command": ["true"]}
        refused = kubectl(local_cluster, "apply", "--dry-run=server", "-n", OPS, "-f", "-",
                          stdin=json.dumps({"apiVersion": API, "kind": "BackupVerification",
                                            "metadata": {"name": "long-probe"},
                                            "spec": {"backupRef": {"name": backup},
                                                     "checks": {"probes": [too_long]}}}),
                          check=False)  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        probe = {"name": "p" * 57, "image": "busybox", "command": ["sh", "-c", "exit 0"]}
        drill = _drill(local_cluster, name, {"backupRef": {"name": backup},
                                             "checks": {"repository": False,
                                                        "probes": [probe]}})  # fmt: skip
        status = drill["status"]
        for scratch in status.get("scratchNamespaces") or []:
            assert len(scratch) <= 63, scratch
            wait_for(
                lambda s=scratch: not _namespace_exists(local_cluster, s), 180, f"{scratch} gone"
            )
        failed = [c for c in status["checks"] if c["result"] == "Failed"]
        assert status["result"] == "Passed", json.dumps(failed)
    finally:
        kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


def test_duplicate_probe_names_are_refused(local_cluster: LocalCluster) -> None:
    """The API says probe names are unique in the list; two probes of one name must be refused
    when the drill is created (not fail later with ProbeNotStarted / AlreadyExists)."""
    doc = {"apiVersion": API, "kind": "BackupVerification", "metadata": {"name": "dup-probes"},
           "spec": {"backupRef": {"name": "x"}, "checks": {"probes": [
               {"name": "same", "image": "busybox", "command": ["true"]},
               {"name": "same", "image": "busybox", "command": ["false"]}]}}}  # fmt: skip
    done = kubectl(local_cluster, "apply", "--dry-run=server", "-n", OPS, "-f", "-",
                   stdin=json.dumps(doc), check=False)  # fmt: skip
    assert done.returncode != 0, done.stdout


def test_neither_backup_ref_nor_policy_ref_is_refused(local_cluster: LocalCluster) -> None:
    """'exactly one of backupRef or policyRef': both (or none) should be refused on create."""
    for spec in ({}, {"backupRef": {"name": "a"}, "policyRef": {"name": "b"}}):
        doc = {"apiVersion": API, "kind": "BackupVerification",
               "metadata": {"name": "refs"}, "spec": spec}  # fmt: skip
        done = kubectl(local_cluster, "apply", "--dry-run=server", "-n", OPS, "-f", "-",
                       stdin=json.dumps(doc), check=False)  # fmt: skip
        assert done.returncode != 0, (spec, done.stdout)


# ------------------------------------------------------------------------------------- limits
def test_the_drill_timeout_bounds_a_long_probe(local_cluster: LocalCluster, ns: str) -> None:
    """spec.timeout bounds the whole drill: a probe started before the deadline once ran for
    its own timeoutSeconds (+60 s), regardless of the drill's remaining time."""
    name = f"tmo-{ns}"
    _backup(local_cluster, ns, name)
    slow = {"name": "slow", "image": "busybox", "command": ["sh", "-c", "sleep 170"],
            "timeoutSeconds": 600}  # fmt: skip
    drill = _drill(local_cluster, name, {"backupRef": {"name": name}, "timeout": "1m",
                                         "checks": {"repository": False, "probes": [slow]}},
                   timeout=400)  # fmt: skip
    status = drill["status"]
    took = (datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
            - datetime.fromisoformat(status["startTime"].replace("Z", "+00:00")))  # fmt: skip
    failed = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert failed["reason"] == "DrillTimedOut", failed
    assert took.total_seconds() < 60 + 45, f"a 1m drill ran {took}"


# ------------------------------------------------------------------------ interrupted drills
def test_a_drill_deleted_mid_run_stops_records_no_verdict_and_leaves_nothing(
    local_cluster: LocalCluster, ns: str
) -> None:
    """Deleting a running drill: nothing of it may be left, and a drill that no longer exists
    must not write a verdict on the Backup (least of all Corrupt or VerificationFailed because
    its scratch namespace was swept under it)."""
    name = f"del-{ns}"
    _backup(local_cluster, ns, name)
    slow = {"name": "slow", "image": "busybox", "command": ["sh", "-c", "sleep 40"]}
    _start(local_cluster, name, {"backupRef": {"name": name},
                                 "checks": {"repository": False, "probes": [slow]}})  # fmt: skip
    scratch = wait_for(
        lambda: _probing(local_cluster, name),
        180,
        "the drill to run its probe",
    )
    kubectl(local_cluster, "delete", "backupverification", "-n", OPS, name)
    for s in scratch:
        wait_for(lambda s=s: not _namespace_exists(local_cluster, s), 180, f"{s} gone")
    time.sleep(90)  # the deleted drill's thread: probe (40 s, or until its timeout) and end
    leftovers = kubectl(local_cluster, "get", "jobs,pods", "-n", ns, "-o", "name").stdout
    verdict = _verification(local_cluster, name)
    assert not verdict, f"a deleted drill recorded a verdict on the Backup: {verdict}"
    assert "probe" not in leftovers, leftovers


def test_a_drill_recreated_under_its_name_is_not_disturbed_by_the_deleted_one(
    local_cluster: LocalCluster, ns: str
) -> None:
    """A deleted drill (whose run went on) and a new drill of the same name once shared their
    work directory: the old run's clean-up removed the new run's export mid-restore, and the
    healthy Backup was marked Corrupt."""
    big = local_cluster.pvc_path(ns, "data") / "big.bin"
    with big.open("wb") as out:
        for _ in range(64):
            out.write(uuid.uuid4().bytes * 65536)  # 64 MiB, compressible but not dedup-free
    name = f"rec-{ns}"
    _backup(local_cluster, ns, name)
    spec = {"backupRef": {"name": name}, "checks": {"repository": False, "workloads": False}}
    _start(local_cluster, name, spec)
    wait_for(lambda: "restoring" in _message(_status(local_cluster, name)), 120, "restoring")
    kubectl(local_cluster, "delete", "backupverification", "-n", OPS, name)
    _start(local_cluster, name, spec)
    done = wait_for(
        lambda: _ended(local_cluster, name),
        400,
        "the second drill to end",
    )
    time.sleep(20)  # the first run's own end
    verdict = _verification(local_cluster, name)
    failed = [c for c in done.get("checks") or [] if c["result"] == "Failed"]
    assert (done["result"], verdict.get("result")) == ("Passed", "Verified"), json.dumps(
        {"failed": failed, "verdict": verdict}
    )


def test_deleting_the_backup_mid_drill_ends_the_drill(local_cluster: LocalCluster, ns: str) -> None:
    """The Backup deleted while its drill runs: the drill ends (no Running forever) and removes
    its scratch namespace."""
    name = f"bdel-{ns}"
    _backup(local_cluster, ns, name)
    slow = {"name": "slow", "image": "busybox", "command": ["sh", "-c", "sleep 20"]}
    _start(local_cluster, name, {"backupRef": {"name": name},
                                 "checks": {"repository": False, "probes": [slow]}})  # fmt: skip
    wait_for(lambda: "probe" in _message(_status(local_cluster, name)), 180, "probe running")
    kubectl(local_cluster, "delete", "backup", "-n", OPS, name, "--wait=false")
    done = wait_for(
        lambda: _ended(local_cluster, name),
        240,
        "the drill to end",
    )
    for s in done.get("scratchNamespaces") or []:
        wait_for(lambda s=s: not _namespace_exists(local_cluster, s), 180, f"{s} gone")
    assert done["phase"] in ("Succeeded", "Failed"), done
