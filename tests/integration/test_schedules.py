"""Schedules, triggers, retention and deletion of policy backups, against the real API server,
SeaweedFS and restic. Most timing is driven through Scheduler.tick(now) with an injected clock;
one test waits for a real `*/1 * * * *` run."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import (
    API,
    apply,
    condition,
    create_and_wait,
    get,
    wait_complete,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess
from localcluster.sample_app import restic_check, restic_cli
from safehold.engine.scheduler import Scheduler
from safehold.kube.clients import Clients

pytestmark = pytest.mark.usefixtures("operator", "ops_bucket")
JSON = dict[str, Any]


def policy_doc(name: str, app: str, **spec: Any) -> JSON:
    return {
        "apiVersion": API,
        "kind": "BackupPolicy",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/instance": "argo-app", "team": "shop"},
            "annotations": {"argocd.argoproj.io/tracking-id": "argo-app:safehold.io/x"},
        },
        "spec": {
            "storageLocation": "main",
            "selection": {"namespaces": [app], "includedResources": ["configmaps"]},
            **spec,
        },
    }


def policy_backups(cluster: LocalCluster, policy: str) -> list[JSON]:
    out = kubectl(
        cluster, "get", "-n", OPS, "backups", "-l", f"safehold.io/policy={policy}", "-o", "json"
    )
    items: list[JSON] = json.loads(out.stdout)["items"]
    return sorted(items, key=lambda b: b["metadata"]["name"])


def wait_ready(cluster: LocalCluster, name: str, reason: str, timeout: float = 30) -> JSON:
    def ready() -> JSON | None:
        obj = get(cluster, OPS, "backuppolicy", name)
        cond = condition(obj, "Ready") or {}
        return obj if cond.get("reason") == reason else None

    return wait_for(ready, timeout, f"policy {name} Ready reason {reason}")


def annotate(cluster: LocalCluster, kind: str, name: str, key: str, value: str) -> None:
    kubectl(cluster, "annotate", "--overwrite", "-n", OPS, kind, name, f"{key}={value}")


def manifest_exists(cluster: LocalCluster, bucket: str, backup: str) -> bool:
    key = f"backups/{OPS}/{backup}/backup.json"
    found = cluster.s3_client().list_objects_v2(Bucket=bucket, Prefix=key)
    return bool(found.get("Contents"))


def snapshot_ids(cluster: LocalCluster, bucket: str) -> set[str]:
    out = restic_cli(cluster, bucket, OPS, "snapshots", "--json", "--no-lock")
    return {s["id"] for s in json.loads(out)}


@pytest.fixture
def scheduler(local_cluster: LocalCluster) -> Iterator[Scheduler]:
    """A scheduler in the test process whose clock the test sets (tick(now))."""
    api = local_cluster.api_client()
    yield Scheduler(Clients.from_api_client(api))
    api.close()


def test_trigger_annotation_runs_once_per_new_value_without_argo_labels(
    local_cluster: LocalCluster, app: str
) -> None:
    name = f"trig-{app}"
    apply(local_cluster, OPS, policy_doc(name, app))
    obj = wait_ready(local_cluster, name, "OnDemand")
    assert not obj["metadata"].get("finalizers")  # deletionPolicy Retain: no finalizer
    annotate(local_cluster, "backuppolicy", name, "safehold.io/trigger", "v1")
    first = wait_for(lambda: policy_backups(local_cluster, name), 30, "a triggered Backup")
    assert len(first) == 1
    backup = wait_complete(local_cluster, OPS, "backup", first[0]["metadata"]["name"])
    assert backup["status"]["phase"] == "Succeeded", backup["status"]
    meta = backup["metadata"]
    assert meta["labels"] == {"safehold.io/policy": name}
    assert not any(k.startswith("argocd.argoproj.io") for k in meta.get("annotations", {}))
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["blockOwnerDeletion"]) == (
        "BackupPolicy",
        name,
        False,
    )
    # The same value again (e.g. Argo CD re-applying it) starts nothing.
    apply(local_cluster, OPS, policy_doc(name, app))
    annotate(local_cluster, "backuppolicy", name, "safehold.io/trigger", "v1")
    time.sleep(3)
    assert len(policy_backups(local_cluster, name)) == 1
    annotate(local_cluster, "backuppolicy", name, "safehold.io/trigger", "v2")
    wait_for(lambda: len(policy_backups(local_cluster, name)) == 2, 30, "a second run")
    status = wait_for(
        lambda: (
            (s := get(local_cluster, OPS, "backuppolicy", name)["status"])
            .get("lastSuccessfulBackup", {})
            .get("name")
            == first[0]["metadata"]["name"]
            and s
        ),
        30,
        "lastSuccessfulBackup",
    )
    assert status["lastTrigger"] == "v2"
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")


def own(created: list[str], policy: str) -> list[str]:
    """The runs a tick created for `policy` (policies other tests leave behind tick too)."""
    return [c for c in created if c.startswith(f"{OPS}/{policy}-")]


def test_schedule_with_injected_clock_missed_runs_deadline_and_suspend(
    local_cluster: LocalCluster, app: str, scheduler: Scheduler
) -> None:
    name = f"yearly-{app}"
    apply(
        local_cluster, OPS, policy_doc(name, app, schedule="0 0 1 1 *", timeZone="America/New_York")
    )
    wait_ready(local_cluster, name, "Scheduled")
    year = datetime.now(UTC).year + 1
    # New Year in New York is 05:00 UTC.
    result = scheduler.tick(datetime(year, 1, 1, 5, 0, 20, tzinfo=UTC))
    assert own(result.created, name) == [f"{OPS}/{name}-{year}01010500"]
    status = get(local_cluster, OPS, "backuppolicy", name)["status"]
    assert status["nextScheduleTime"] == f"{year + 1}-01-01T05:00:00Z"
    assert not status.get("missedRuns")
    done = wait_complete(local_cluster, OPS, "backup", f"{name}-{year}01010500")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # Down for three years: two runs missed, one catch-up run.
    result = scheduler.tick(datetime(year + 3, 1, 1, 6, 0, tzinfo=UTC))
    assert own(result.created, name) == [f"{OPS}/{name}-{year + 3}01010500"]
    status = get(local_cluster, OPS, "backuppolicy", name)["status"]
    assert status["missedRuns"] == 2
    events = kubectl(
        local_cluster,
        "get",
        "events",
        "-n",
        OPS,
        "--field-selector",
        f"involvedObject.name={name},reason=MissedRuns",
        "-o",
        "json",
    ).stdout
    assert "2 scheduled run(s) missed and starting one catch-up run" in events
    wait_complete(local_cluster, OPS, "backup", f"{name}-{year + 3}01010500")
    # Past the starting deadline: no run, one more missed.
    spec = {"schedule": "0 0 1 1 *", "timeZone": "America/New_York", "startingDeadlineSeconds": 300}
    apply(local_cluster, OPS, policy_doc(name, app, **spec))
    result = scheduler.tick(datetime(year + 4, 1, 1, 5, 10, tzinfo=UTC))
    assert own(result.created, name) == []
    assert get(local_cluster, OPS, "backuppolicy", name)["status"]["missedRuns"] == 3
    # Suspended: nothing runs, nothing counts as missed.
    apply(local_cluster, OPS, policy_doc(name, app, suspend=True, **spec))
    assert scheduler.tick(datetime(year + 5, 1, 1, 5, 0, 30, tzinfo=UTC)).created == []
    obj = get(local_cluster, OPS, "backuppolicy", name)
    assert obj["status"]["missedRuns"] == 3
    assert (condition(obj, "Ready") or {}).get("reason") == "Suspended"
    assert len(policy_backups(local_cluster, name)) == 2
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")


def test_invalid_policies_name_their_reason(local_cluster: LocalCluster, app: str) -> None:
    cases = {
        "bad-cron": {"schedule": "61 * * * *"},
        "bad-zone": {"schedule": "@daily", "timeZone": "Mars/Olympus"},
        "no-location": {"schedule": "@daily", "storageLocation": "missing"},
    }
    reasons = {
        "bad-cron": "InvalidSchedule",
        "bad-zone": "UnknownTimeZone",
        "no-location": "LocationNotFound",
    }
    for suffix, spec in cases.items():
        apply(local_cluster, OPS, policy_doc(f"{suffix}-{app}", app, **spec))
    for suffix, reason in reasons.items():
        obj = wait_ready(local_cluster, f"{suffix}-{app}", reason)
        assert (condition(obj, "Ready") or {})["status"] == "False"
        kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", f"{suffix}-{app}")
    name = f"rpo-{app}"
    apply(local_cluster, OPS, policy_doc(name, app, rpo="1s"))
    obj = wait_ready(local_cluster, name, "RPOViolated")
    assert obj["status"]["rpoMet"] is False
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name)


def test_retention_deletes_exactly_the_expired_backups_and_their_data(
    local_cluster: LocalCluster, app: str, ops_bucket: str, operator: OperatorProcess
) -> None:
    name = f"ret-{app}"
    apply(
        local_cluster,
        OPS,
        policy_doc(name, app, retention={"keepLast": 2}, deletionPolicy="Delete"),
    )
    obj = wait_ready(local_cluster, name, "OnDemand")
    assert obj["metadata"].get("finalizers")  # deletionPolicy Delete: a finalizer
    runs: list[JSON] = []
    for index in range(4):
        done = create_and_wait(
            local_cluster, OPS, "Backup", f"{name}-{index}", {"policyRef": {"name": name}}
        )
        assert done["status"]["phase"] == "Succeeded", done["status"]
        runs.append(done)
    ids = [r["status"]["resources"]["snapshotId"] for r in runs]

    def only_newest_two() -> bool:
        names = [b["metadata"]["name"] for b in policy_backups(local_cluster, name)]
        return names == [f"{name}-2", f"{name}-3"]

    wait_for(only_newest_two, 30, "retention to delete the two oldest")
    present = snapshot_ids(local_cluster, ops_bucket)
    assert not present & set(ids[:2])
    assert set(ids[2:]) <= present
    assert [manifest_exists(local_cluster, ops_bucket, f"{name}-{i}") for i in range(4)] == [
        False,
        False,
        True,
        True,
    ]
    restic_check(local_cluster, ops_bucket, OPS)
    metrics = operator.metrics()
    labels = f'namespace="{OPS}",policy="{name}",reason="Retention"'
    assert f"safehold_retention_deletions_total{{{labels}}} 2.0" in metrics

    # A failed run deletes nothing, even with a stricter rule.
    kubectl(local_cluster, "delete", "namespace", app, "--wait=true", timeout=120)
    apply(
        local_cluster,
        OPS,
        policy_doc(name, app, retention={"keepLast": 1}, deletionPolicy="Delete"),
    )
    failed = create_and_wait(
        local_cluster, OPS, "Backup", f"{name}-4", {"policyRef": {"name": name}}
    )
    assert failed["status"]["phase"] == "Failed"
    time.sleep(3)
    names = [b["metadata"]["name"] for b in policy_backups(local_cluster, name)]
    assert names == [f"{name}-2", f"{name}-3"]  # the failed run ended before it was labelled
    assert get(local_cluster, OPS, "backup", f"{name}-4")["status"]["phase"] == "Failed"
    assert manifest_exists(local_cluster, ops_bucket, f"{name}-2")

    # An explicit delete request goes through the same path.
    out = subprocess.run(
        [*operator_cli(), "backup", "delete", f"{name}-2", "-n", OPS, "--wait", "--timeout", "60s"],
        env=cli_env(local_cluster),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert not manifest_exists(local_cluster, ops_bucket, f"{name}-2")
    assert ids[2] not in snapshot_ids(local_cluster, ops_bucket)

    # deletionPolicy Delete: deleting the policy deletes its backups' data.
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--timeout=60s")
    assert policy_backups(local_cluster, name) == []
    assert not manifest_exists(local_cluster, ops_bucket, f"{name}-3")
    assert ids[3] not in snapshot_ids(local_cluster, ops_bucket)
    restic_check(local_cluster, ops_bucket, OPS)


def operator_cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "safehold"]


def cli_env(cluster: LocalCluster) -> dict[str, str]:
    import os

    path = os.pathsep.join([str(binaries.tools_bin_dir()), os.environ.get("PATH", "")])
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": path}


def test_every_minute_schedule_starts_a_run_on_time(local_cluster: LocalCluster, app: str) -> None:
    name = f"min-{uuid.uuid4().hex[:6]}"
    apply(local_cluster, OPS, policy_doc(name, app, schedule="*/1 * * * *"))
    obj = wait_ready(local_cluster, name, "Scheduled")
    applied = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    backup = wait_for(
        lambda: next((b for b in policy_backups(local_cluster, name)), None),
        75,
        "the scheduled Backup",
    )
    # The first run is the first whole minute after the policy was created (the status may
    # already point at the following minute when the test reads it under load).
    due = datetime.fromisoformat(
        backup["metadata"]["annotations"]["safehold.io/scheduled-time"].replace("Z", "+00:00")
    )
    assert due.second == 0
    assert applied < due <= applied + timedelta(seconds=61)
    expected = f"{name}-{due:%Y%m%d%H%M}"
    assert backup["metadata"]["name"] == expected
    created = datetime.fromisoformat(backup["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert due <= created <= due + timedelta(seconds=5)
    done = wait_complete(local_cluster, OPS, "backup", expected)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    apply(local_cluster, OPS, policy_doc(name, app, schedule="*/1 * * * *", suspend=True))
    obj = wait_ready(local_cluster, name, "Suspended")
    assert "nextScheduleTime" not in obj["status"]
    assert obj["status"]["lastSuccessfulBackup"]["name"] == expected
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")


def test_forbid_skips_a_run_while_the_previous_one_runs(
    local_cluster: LocalCluster, app: str, scheduler: Scheduler
) -> None:
    name = f"forbid-{app}"
    apply(local_cluster, OPS, policy_doc(name, app, schedule="0 * * * *"))
    wait_ready(local_cluster, name, "Scheduled")
    # A run of this policy that is still going. Annotated as re-discovered from storage, so the
    # operator leaves it alone and its phase stays what the test says.
    inflight = f"{name}-inflight"
    apply(
        local_cluster,
        OPS,
        {
            "apiVersion": API,
            "kind": "Backup",
            "metadata": {
                "name": inflight,
                "labels": {"safehold.io/policy": name},
                "annotations": {"safehold.io/synced-from-storage": "test"},
            },
            "spec": {"storageLocation": "main"},
        },
    )

    def set_phase(phase: str) -> None:
        kubectl(
            local_cluster,
            "patch",
            "-n",
            OPS,
            "backup",
            inflight,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": phase}}),
        )

    set_phase("Running")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    assert scheduler.tick(hour + timedelta(seconds=20)).created == []
    events = kubectl(
        local_cluster,
        "get",
        "events",
        "-n",
        OPS,
        "--field-selector",
        f"involvedObject.name={name},reason=RunSkipped",
        "-o",
        "json",
    ).stdout
    assert "concurrencyPolicy Forbid" in events
    assert [b["metadata"]["name"] for b in policy_backups(local_cluster, name)] == [inflight]

    set_phase("Succeeded")
    next_hour = hour + timedelta(hours=1)
    created = scheduler.tick(next_hour + timedelta(seconds=20)).created
    assert created == [f"{OPS}/{name}-{next_hour:%Y%m%d%H%M}"]
    wait_complete(local_cluster, OPS, "backup", created[0].split("/")[1])
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")


def test_a_created_run_keeps_the_content_it_was_created_with(
    local_cluster: LocalCluster, app: str, operator: OperatorProcess, scheduler: Scheduler
) -> None:
    """A policy's run records the policy's content when it is created: an edit of the policy
    between creating the Backup and running it changes nothing of what the run takes."""
    name = f"edit-{app}"
    apply(local_cluster, OPS, policy_doc(name, app))
    wait_ready(local_cluster, name, "OnDemand")
    with operator.stopped():
        annotate(local_cluster, "backuppolicy", name, "safehold.io/trigger", "before-edit")
        created = scheduler.tick().created
        assert len(created) == 1
        backup = created[0].split("/")[1]
        taken = get(local_cluster, OPS, "backup", backup)["spec"]
        assert taken["selection"]["includedResources"] == ["configmaps"]
        assert "policyRef" not in taken
        edited = policy_doc(name, app)
        edited["spec"]["selection"]["includedResources"] = ["secrets", "configmaps"]
        apply(local_cluster, OPS, edited)
    done = wait_complete(local_cluster, OPS, "backup", backup)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["policy"] == name
    assert set(done["status"]["resources"]["byKind"]) == {"configmaps"}
    # The next run takes the edited content.
    annotate(local_cluster, "backuppolicy", name, "safehold.io/trigger", "after-edit")
    second = wait_for(
        lambda: [b for b in policy_backups(local_cluster, name) if b["metadata"]["name"] != backup],
        30,
        "the second run",
    )[0]
    after = wait_complete(local_cluster, OPS, "backup", second["metadata"]["name"])
    assert set(after["status"]["resources"]["byKind"]) == {"configmaps", "secrets"}
    kubectl(local_cluster, "delete", "-n", OPS, "backuppolicy", name, "--wait=false")
