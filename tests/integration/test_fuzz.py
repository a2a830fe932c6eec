"""A fuzz of every kind against the real API server while the operator runs (issue #15):
a few hundred specs, valid ones mutated with hostile values (huge numbers, overflowing
durations, long and odd names, wrong types, unknown fields, paths with `..`). Whatever the API
server accepts gets a status with a reason within a bound; no traceback repeats in the
operator's log; the operator never restarts."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.kube import KubeError
from localcluster.operator import OperatorProcess

JSON = dict[str, Any]
PLURALS = {
    "BackupStorageLocation": "backupstoragelocations",
    "BackupPolicy": "backuppolicies",
    "Backup": "backups",
    "RestoreRequest": "restorerequests",
}
PER_KIND = 80
STATUS_BOUND = 240.0  # seconds for every accepted object to say something

NASTY: list[Any] = [
    "",
    "x" * 300,
    "*",
    "../..",
    "a/../b",
    "100000000h",
    "1h" * 30,
    "99999h",
    "-1",
    "lots",
    "日本語",
    "0s",
    "5m",
    "@reboot",
    "61 * * * *",
    "Mars/Olympus",
    "http://127.0.0.1:9",
    0,
    -1,
    2**31,
    2**63 - 1,
    1.5,
    True,
    None,
    [],
    {},
    {"a": "b"},
    ["x", "y"],
]

BASES: dict[str, JSON] = {
    "BackupStorageLocation": {
        "endpoint": "http://127.0.0.1:9",
        "bucket": "fuzz-bucket",
        "forcePathStyle": True,
        "credentialsSecret": {"name": "missing"},
        "repositoryPasswordSecret": {"name": "missing"},
    },
    "BackupPolicy": {"storageLocation": "nowhere", "schedule": "@daily"},
    "Backup": {"storageLocation": "nowhere"},
    "RestoreRequest": {"backupRef": {"name": "nothing"}},
}
PATHS: dict[str, list[str]] = {
    "BackupStorageLocation": [
        "endpoint",
        "bucket",
        "prefix",
        "region",
        "syncPeriod",
        "accessMode",
        "caBundle",
        "credentialsSecret.name",
        "credentialsSecret.accessKeyIdKey",
        "insecureSkipTlsVerify",
        "repositoryPasswordSecret",
        "unknownField",
    ],
    "BackupPolicy": [
        "schedule",
        "timeZone",
        "rpo",
        "suspend",
        "concurrencyPolicy",
        "startingDeadlineSeconds",
        "retention.keepLast",
        "retention.failedBackupGracePeriod",
        "selection.namespaces",
        "selection.includedResources",
        "selection.labelSelector",
        "volumes.parallelism",
        "volumes.moverTimeout",
        "volumes.moverResources.limits.cpu",
        "databases",
        "hooks.pre",
        "deletionPolicy",
        "storageLocation",
    ],
    "Backup": [
        "ttl",
        "policyRef.name",
        "selection.namespaces",
        "selection.excludedResources",
        "volumes.rules",
        "volumes.snapshotTimeout",
        "databases",
        "storageLocation",
        "hooks.post",
    ],
    "RestoreRequest": [
        "backupRef.name",
        "namespaceMapping",
        "includedNamespaces",
        "existingResourcePolicy",
        "dryRun",
        "volumes.pvcs",
        "databases.targets",
        "databases.targetReadyTimeout",
        "serviceAccountName",
        "includedResources",
        "labelSelector",
    ],
}
TARGET = {"name": "pg", "type": "postgresql", "host": "127.0.0.1", "port": 9}


def _set(doc: JSON, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        child = doc.get(part)
        if not isinstance(child, dict):
            child = doc[part] = {}
        doc = child
    doc[parts[-1]] = value


@st.composite
def objects(draw: st.DrawFn, kind: str) -> JSON:
    spec = copy.deepcopy(BASES[kind])
    for path in draw(st.lists(st.sampled_from(PATHS[kind]), min_size=0, max_size=3)):
        value = draw(
            st.one_of(
                st.sampled_from(NASTY),
                st.text(max_size=40),
                st.integers(),
                st.just([dict(TARGET)]),
            )
        )
        _set(spec, path, value)
    name = draw(
        st.one_of(
            st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
            st.from_regex(r"[a-z]{60,80}", fullmatch=True),
        )
    )
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": f"{name}-{uuid.uuid4().hex[:4]}"},
        "spec": spec,
    }


EXAMPLES = 80  # each one object of every kind: 320 objects


def _said(obj: JSON) -> bool:
    """A status with a condition that gives a reason."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    if obj["kind"] in ("Backup", "RestoreRequest"):
        done = [c for c in conditions if c.get("type") == "Complete" and c.get("status") == "True"]
        return bool(done) and all(c.get("reason") for c in conditions)
    return any(c.get("type") == "Ready" and c.get("reason") for c in conditions)


@pytest.mark.usefixtures("crds_installed")
def test_fuzzed_objects_all_get_a_reason_and_the_operator_holds(
    local_cluster: LocalCluster, operator: OperatorProcess
) -> None:
    namespace = f"fuzz-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(namespace)
    accepted: list[JSON] = []
    refused: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        # The same objects on every CI run (set it False to explore new ones).
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(docs=st.tuples(*(objects(kind) for kind in PLURALS)))
    def post(docs: tuple[JSON, ...]) -> None:
        for doc in docs:
            path = f"/apis/safehold.io/v1alpha1/namespaces/{namespace}/{PLURALS[doc['kind']]}"
            try:
                accepted.append(local_cluster.kube.post(path, doc))
            except KubeError as err:
                server_errors = [] if 400 <= err.status < 500 else [err]  # never a 5xx
                assert not server_errors, server_errors
                refused.append(err.message)

    try:
        _post_and_check(local_cluster, operator, namespace, post, accepted, refused)
    finally:  # its policies would otherwise keep being scheduled by later tests' clocks
        kubectl(local_cluster, "delete", "namespace", namespace, "--wait=false", check=False)


def _post_and_check(
    local_cluster: LocalCluster,
    operator: OperatorProcess,
    namespace: str,
    post: Callable[[], None],
    accepted: list[JSON],
    refused: list[str],
) -> None:
    pid = operator.process.pid
    log_start = len(operator.log_text())
    post()
    # Both sides of admission are exercised, each by many objects.
    assert len(accepted) >= EXAMPLES, (len(accepted), len(refused))
    assert len(refused) >= EXAMPLES // 2, (len(accepted), len(refused))
    print(f"fuzz: {len(accepted)} accepted, {len(refused)} refused at admission")

    def unsaid() -> list[str]:
        silent = []
        for obj in accepted:
            kind, name = obj["kind"], obj["metadata"]["name"]
            path = f"/apis/safehold.io/v1alpha1/namespaces/{namespace}/{PLURALS[kind]}/{name}"
            current = local_cluster.kube.get_or_none(path)
            if current is not None and not _said(current):
                silent.append(f"{kind} {name}")
        return silent

    deadline = time.monotonic() + STATUS_BOUND
    silent = unsaid()
    while silent and time.monotonic() < deadline:
        time.sleep(2)
        silent = unsaid()
    assert silent == [], f"{len(silent)} of {len(accepted)} objects got no reason: {silent[:10]}"
    # The operator held: same process, answering, no traceback logged again and again.
    assert operator.process.pid == pid
    assert operator.process.running()
    wait_for(operator._healthy, 10, "the liveness endpoint")
    tracebacks: Counter[str] = Counter()
    for line in operator.log_text()[log_start:].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("exc_info"):
            last = entry["exc_info"].strip().splitlines()[-1]
            tracebacks[f"{entry.get('message')}: {last}"] += 1
    repeated = {k: n for k, n in tracebacks.items() if n > 1}
    assert repeated == {}, repeated
