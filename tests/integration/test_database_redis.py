"""Redis through the operator: a Backup dumps a real Redis through a mover Job (run by the
node agent, whose scratch directory is a long path, as a real kubelet's emptyDir can be), a
RestoreRequest restores every type, the TTLs and a function library into another Redis; a
repeated restore is refused naming the RestoreRequest field, `clean` flushes; a Secret
without a username key is Redis' default user. A restore names the targets it cannot restore
and shows what it waits for."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integration.redis_content import LIBRARY, content, populate, ttl
from localcluster.cluster import LocalCluster
from localcluster.databases import DatabaseUnavailable, Redis
from localcluster.objects import API, apply, condition, create_and_wait, get, secret, wait_complete
from localcluster.operator import OPERATOR_NAMESPACE as OPS

pytestmark = pytest.mark.usefixtures("operator")

# The restores below restore no Kubernetes object: only the databases decide the phase.
NO_OBJECTS = {"includedResources": ["nothing.safehold.test"]}


def _redis() -> Redis:
    try:
        return Redis().start()
    except DatabaseUnavailable as err:
        pytest.fail(f"Redis must run in the integration tier: {err}")


@pytest.fixture(scope="module")
def source() -> Iterator[Redis]:
    server = _redis()
    yield server
    server.stop()


def _target(name: str, server: Redis, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "redis",
        "host": "127.0.0.1",
        "port": server.port,
        "credentialsSecret": {"name": f"{name}-creds"},
    } | extra


def _backup(cluster: LocalCluster, name: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {
        "storageLocation": "main",
        "selection": {"includedResources": ["configmaps"]},
        "databases": targets,
    }
    status: dict[str, Any] = create_and_wait(cluster, OPS, "Backup", name, spec, timeout=240)[
        "status"
    ]
    return status


def _restore(
    cluster: LocalCluster, backup: str, name: str, databases: dict[str, Any]
) -> dict[str, Any]:
    spec = {"backupRef": {"name": backup}, "databases": databases} | NO_OBJECTS
    done = create_and_wait(cluster, OPS, "RestoreRequest", name, spec, timeout=240)
    status: dict[str, Any] = done["status"]
    return status


def test_redis_round_trip_through_the_operator(
    local_cluster: LocalCluster, ops_bucket: str, source: Redis
) -> None:
    populate(source)
    source.cli("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    before0, before1 = content(source, 0), content(source, 1)
    name = f"rds-{uuid.uuid4().hex[:6]}"
    # Only a password: Redis needs no user, the default usernameKey is not required.
    apply(local_cluster, OPS, secret(f"{name}-creds", {"password": source.password}))
    status = _backup(local_cluster, name, [_target(name, source)])
    assert status["phase"] == "Succeeded", status
    assert [f["path"] for f in status["databases"][0]["files"]] == [
        "redis/dump.rdb",
        "redis/counts.json",
    ]

    target = _redis()
    try:
        apply(local_cluster, OPS, secret(f"{name}-to", {"password": target.password}))
        into = {
            "target": name,
            "host": "127.0.0.1",
            "port": target.port,
            "credentialsSecret": f"{name}-to",
        }
        done = _restore(local_cluster, name, f"{name}-a", {"targets": [into]})
        result = done["databases"][0]
        assert (done["phase"], result["result"]) == ("Succeeded", "Succeeded"), done
        assert content(target, 0) == before0
        assert content(target, 1) == before1
        assert 3500 < ttl(target, "ttl:str") <= 3600
        assert 7100 < ttl(target, "hash") <= 7200
        assert 400 < ttl(target, "other", db=1) <= 500
        assert ttl(target, "str") == -1
        assert target.cli("FCALL", "greet", "0", "Welt").strip() == "Grüß Welt"

        # The same restore again: the target holds keys now, nothing is mixed or replaced.
        target.cli("SET", "str", "changed since")
        refused = _restore(local_cluster, name, f"{name}-b", {"targets": [into]})
        assert refused["phase"] == "Failed", refused
        message = refused["databases"][0]["message"]
        assert message.startswith("DatabaseExists: "), message
        assert "spec.databases.targets[].clean: true" in message
        assert "SAFEHOLD_" not in json.dumps(refused)
        assert any(
            e.startswith(f"database target {name}: DatabaseExists") for e in refused["errors"]
        )
        assert target.cli("GET", "str").strip() == "changed since"

        # clean: the databases restored into are flushed first, keys not in the backup go.
        target.cli("SET", "stale", "not in the backup")
        cleaned = _restore(local_cluster, name, f"{name}-c", {"targets": [into | {"clean": True}]})
        assert cleaned["phase"] == "Succeeded", cleaned
        assert content(target, 0) == before0
        assert content(target, 1) == before1
        assert target.cli("FCALL", "greet", "0", "Welt").strip() == "Grüß Welt"
    finally:
        target.stop()
        source.cli("FUNCTION", "DELETE", "safehold_test")
    assert source.password not in json.dumps(done) + json.dumps(refused)


def _wait_for_message(cluster: LocalCluster, name: str, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        cond = condition(get(cluster, OPS, "restorerequest", name), "Succeeded") or {}
        seen = str(cond.get("message", ""))
        if text in seen:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"RestoreRequest {name} never said {text!r}; last: {seen!r}")


def test_a_restore_names_what_it_cannot_restore_and_what_it_waits_for(
    local_cluster: LocalCluster, ops_bucket: str, source: Redis
) -> None:
    source.cli("FLUSHALL")
    source.cli("SET", "greeting", "später")
    name = f"rdw-{uuid.uuid4().hex[:6]}"
    nobody = Redis()  # its port has no listener
    apply(
        local_cluster,
        OPS,
        secret(f"{name}-creds", {"password": source.password}),
        secret(f"{name}-down-creds", {"password": "unused"}),
        secret(f"{name}-strict-creds", {"password": source.password}),
    )
    status = _backup(
        local_cluster,
        name,
        [
            _target(name, source),
            _target(f"{name}-down", nobody),
            # A key the target names must be there.
            _target(
                f"{name}-strict",
                source,
                credentialsSecret={"name": f"{name}-strict-creds", "usernameKey": "user"},
            ),
        ],
    )
    results = {d["target"]: d for d in status["databases"]}
    assert results[name]["result"] == "Succeeded", status
    assert results[f"{name}-down"]["message"].startswith("HostUnreachable"), status
    assert results[f"{name}-strict"]["message"].startswith("SecretKeyMissing"), status

    late = Redis()  # started only once the restore says it waits for it
    apply(local_cluster, OPS, secret(f"{name}-late", {"password": late.password}))
    restore = f"{name}-r"
    spec = {
        "backupRef": {"name": name},
        "databases": {
            "targetReadyTimeout": "3m",
            "targets": [
                {
                    "target": name,
                    "host": "127.0.0.1",
                    "port": late.port,
                    "credentialsSecret": f"{name}-late",
                },
                {"target": f"{name}-down"},
                {"target": f"{name}-ghost"},
            ],
        },
    } | NO_OBJECTS
    manifest = {"apiVersion": API, "kind": "RestoreRequest", "metadata": {"name": restore}}
    apply(local_cluster, OPS, manifest | {"spec": spec})
    try:
        said = _wait_for_message(local_cluster, restore, f"127.0.0.1:{late.port}", 180)
        assert said.startswith(f"stage databases: database target {name}: waiting for"), said
        assert "to accept connections" in said, said
        time.sleep(3)
        late.start()
        done = wait_complete(local_cluster, OPS, "restorerequest", restore, 240)["status"]
        assert late.cli("GET", "greeting").strip() == "später", done
    finally:
        late.stop()
    results = {d["target"]: d for d in done["databases"]}
    assert results[name]["result"] == "Succeeded", done
    down, ghost = results[f"{name}-down"], results[f"{name}-ghost"]
    assert down["result"] == "Failed", done
    assert down["message"].startswith("TargetNotBackedUp: its dump failed at backup time"), down
    assert "HostUnreachable" in down["message"], down
    assert ghost["result"] == "Failed", done
    assert ghost["message"].startswith("TargetNotInBackup: the backup has no database"), ghost
    strict = results[f"{name}-strict"]
    assert strict["result"] == "Skipped", done  # not asked for by name: not a failure
    assert done["phase"] == "PartiallyFailed", done
    errors = "\n".join(done["errors"])
    assert f"database target {name}-down: TargetNotBackedUp" in errors
    assert f"database target {name}-ghost: TargetNotInBackup" in errors
    assert any(f"database target {name}-strict skipped" in w for w in done["warnings"]), done
    assert condition({"status": done}, "Succeeded")["reason"] == "PartiallyFailed"  # type: ignore[index]
