"""Child object builders: a policy's run carries the policy's content; nothing else of it."""

from __future__ import annotations

from safehold.api.backup import BackupSpec
from safehold.api.policy import BackupPolicySpec
from safehold.planning.builders import namespace_body, policy_backup, pvc_body

POLICY = {
    "metadata": {
        "name": "nightly",
        "namespace": "ops",
        "uid": "u-1",
        "labels": {"app.kubernetes.io/instance": "argo-app"},
        "annotations": {"argocd.argoproj.io/tracking-id": "x"},
    }
}


def test_policy_run_is_self_contained() -> None:
    spec = BackupPolicySpec.model_validate(
        {
            "storageLocation": "main",
            "schedule": "@daily",
            "selection": {"namespaces": ["shop"], "includedResources": ["configmaps"]},
            "volumes": {"rules": [{"mode": "filesystem"}]},
            "databases": [{"name": "pg", "type": "postgresql", "host": "db.shop"}],
            "hooks": {"pre": [{"name": "sync", "podSelector": {}, "command": ["sync"]}]},
            "retention": {"keepLast": 3},
        }
    )
    body = policy_backup(POLICY, "nightly-1", {"safehold.io/trigger": "a"}, spec)
    assert body["metadata"]["labels"] == {"safehold.io/policy": "nightly"}
    assert body["metadata"]["annotations"] == {"safehold.io/trigger": "a"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    taken = BackupSpec.model_validate(body["spec"])
    assert taken.policy_ref is None  # the content is the run's own
    assert taken.storage_location == "main"
    assert taken.selection.included_resources == ["configmaps"]
    assert taken.databases[0].host == "db.shop"
    assert taken.hooks is not None
    assert taken.hooks.pre[0].command == ["sync"]
    # Policy-only fields are not part of a run.
    assert "schedule" not in body["spec"]
    assert "retention" not in body["spec"]


def test_pvc_and_namespace_bodies() -> None:
    pvc = pvc_body("shop", "data", {"a": "b"}, access_modes=(), size="2Gi", snapshot="s1")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["dataSource"]["name"] == "s1"
    assert "storageClassName" not in pvc["spec"]
    assert namespace_body("shop", {"a": "b"})["metadata"] == {"name": "shop", "labels": {"a": "b"}}
