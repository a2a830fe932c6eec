"""A hostile tenant: every attack of issue #14, run with the tenant's own token (a namespace
`admin`, plus the chart's real tenant ClusterRoles), against the real API server, SeaweedFS
(with a second S3 identity that may use only `tenant-*` buckets) and restic.

- no credential that opens more than the namespace's own backups is readable in the
  namespace at any time while Safehold's movers run there (Secrets, pod environment, files);
- a forged catalog entry and restic snapshot restore nothing beyond the tenant's own rights:
  a RoleBinding to cluster-admin is refused, a symbolic link out of the export is not read,
  index paths cannot leave it, a manifest naming another namespace is refused;
- a revoked RoleBinding and a cut ResourceQuota stay revoked when the tenant restores an
  older backup with existingResourcePolicy update;
- refusals come with reasons (NamespaceNotAllowed, ClusterScopeNotAllowed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helmchart import helm_binary, render_text
from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import (
    API,
    TEST_REPOSITORY_PASSWORD,
    apply,
    condition,
    create_and_wait,
    get,
    location_docs,
    wait_complete,
    wait_probed,
)
from localcluster.operator import OPERATOR_NAMESPACE as OPS

pytestmark = [
    pytest.mark.usefixtures("operator", "ops_bucket"),
    pytest.mark.skipif(helm_binary() is None, reason="helm is missing: run `tools/bootstrap helm`"),
]
JSON = dict[str, Any]
TENANT_PASSWORD = "tenant-repository-password"


def reason(obj: JSON) -> str:
    return str((condition(obj, "Succeeded") or {}).get("reason"))


@dataclass
class Tenant:
    cluster: LocalCluster
    namespace: str
    token: str
    bucket: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """kubectl with the tenant's own token (no admin kubeconfig)."""
        cmd = [
            str(binaries.find("kubectl")),
            f"--server={self.cluster.api_server_url}",
            f"--certificate-authority={self.cluster.ca_cert}",
            f"--token={self.token}",
            "-n",
            self.namespace,
            *args,
        ]
        env = {"PATH": os.environ["PATH"], "KUBECONFIG": "/dev/null", "HOME": "/tmp"}
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tenant kubectl {args}: {result.stderr}")
        return result.stdout

    def apply(self, *docs: JSON) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def create_and_wait(self, kind: str, name: str, spec: JSON, timeout: float = 180) -> JSON:
        self.apply({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
        return wait_complete(self.cluster, self.namespace, kind.lower(), name, timeout)

    def can(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        where = ["-n", namespace] if namespace else []
        out = self.kubectl("auth", "can-i", verb, resource, *where, check=False)
        return out.strip() == "yes"


def _token(cluster: LocalCluster, namespace: str, account: str) -> str:
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    doc = cluster.kube.post(path, {"spec": {"expirationSeconds": 7200}})
    return str(doc["status"]["token"])


def _binding(name: str, role: str, account: str, namespace: str) -> JSON:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


@pytest.fixture(scope="module")
def tenant_roles(local_cluster: LocalCluster) -> None:
    """The chart's tenant ClusterRoles, rendered by helm, applied for real."""
    text = render_text(None, None, "--show-only", "templates/tenant-rbac.yaml")
    kubectl(local_cluster, "apply", "-f", "-", stdin=text)


@pytest.fixture
def tenant(local_cluster: LocalCluster, tenant_roles: None) -> Iterator[Tenant]:
    """A namespace whose user is a namespace `admin` (the chart's roles aggregate into it),
    with the restore ServiceAccount bound to `admin` too, and its own bucket and location."""
    ns = f"tn-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(ns)
    account = {"apiVersion": "v1", "kind": "ServiceAccount"}
    apply(
        local_cluster,
        ns,
        {**account, "metadata": {"name": "tenant"}},
        {**account, "metadata": {"name": "safehold-restore"}},
        _binding("tenant-admin", "admin", "tenant", ns),
        _binding("restore-admin", "admin", "safehold-restore", ns),
    )
    bucket = f"tenant-{uuid.uuid4().hex[:6]}"
    local_cluster.create_bucket(bucket)
    token = wait_for(lambda: _token(local_cluster, ns, "tenant"), 30, "a tenant token")
    yield Tenant(local_cluster, ns, token, bucket)
    kubectl(local_cluster, "delete", "namespace", ns, "--wait=false", check=False)


def _own_location(tenant: Tenant, name: str = "own") -> None:
    access, secret_key = tenant.cluster.s3_tenant_keys
    docs = location_docs(
        tenant.cluster,
        name,
        tenant.bucket,
        access_key=access,
        secret_key=secret_key,
        password=TENANT_PASSWORD,
    )
    tenant.apply(*docs)
    probed = wait_probed(tenant.cluster, tenant.namespace, name)
    assert (condition(probed, "Ready") or {}).get("status") == "True", probed.get("status")


# ------------------------------------------------------------------- credentials in the namespace
@dataclass
class Watcher:
    """Polls everything a tenant can read in its namespace while movers run there."""

    cluster: LocalCluster
    namespace: str
    forbidden: dict[str, str]
    found: list[str] = field(default_factory=list)
    mover_secrets: list[JSON] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _scan(self) -> None:
        secrets = self.cluster.kube.get(f"/api/v1/namespaces/{self.namespace}/secrets")["items"]
        for item in secrets:
            values = {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in (item.get("data") or {}).items()
            }
            if (item["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "mover":
                self.mover_secrets.append(values)
            self._check(f"Secret {item['metadata']['name']}", json.dumps(values))
        pods = self.cluster.kube.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]
        for pod in pods:
            self._check(f"Pod {pod['metadata']['name']}", json.dumps(pod["spec"]))
        for folder in (self.cluster.node_root / "pods").glob(f"{self.namespace}_*"):
            for path in folder.rglob("*"):
                if path.is_file() and path.stat().st_size < 1_000_000:
                    self._check(str(path), path.read_text(errors="replace"))

    def _check(self, where: str, text: str) -> None:
        for what, value in self.forbidden.items():
            if value in text:
                self.found.append(f"{what} readable in {where}")

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # objects vanish while we read them
                self._scan()
            time.sleep(0.2)

    def __enter__(self) -> Watcher:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _restic_as(
    cluster: LocalCluster, repository: str, password: str, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "RESTIC_REPOSITORY": repository}
    env |= {"RESTIC_PASSWORD": password, **extra}
    cmd = [str(binaries.find("restic")), "--no-cache", "-o", "s3.bucket-lookup=path", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_no_credential_of_another_repository_reaches_the_namespace(
    local_cluster: LocalCluster, ops_bucket: str, tenant: Tenant
) -> None:
    ns = tenant.namespace
    data = local_cluster.pvc_path(ns, "data")
    apply(
        local_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    data.mkdir(parents=True, exist_ok=True)
    (data / "orders.csv").write_text("1,book\n2,pen\n")
    forbidden = {
        "the object store's access key": local_cluster.s3_access_key,
        "the object store's secret key": local_cluster.s3_secret_key,
        "the central repository password": TEST_REPOSITORY_PASSWORD,
    }
    name = f"adm-{ns}"
    spec = {
        "storageLocation": "main",
        "selection": {"namespaces": [ns], "includedResources": ["persistentvolumeclaims"]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    with Watcher(local_cluster, ns, forbidden) as backup_watch:
        done = create_and_wait(local_cluster, OPS, "Backup", name, spec)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert backup_watch.found == []
    assert backup_watch.mover_secrets, "the watcher never saw the mover's Secret"
    captured = backup_watch.mover_secrets[0]
    assert set(captured) >= {"RESTIC_REPOSITORY", "RESTIC_REST_USERNAME", "RESTIC_PASSWORD"}
    assert not any(k.startswith("AWS_") for k in captured)
    volume = done["status"]["volumes"][0]
    assert volume["repository"] == f"namespace-repositories/{OPS}/{ns}"
    # What the tenant captured opens nothing now: the grant was revoked when the Job ended,
    # and the password it held is not the central repository's.
    rest = {k: captured[k] for k in ("RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD")}
    late = _restic_as(
        local_cluster,
        captured["RESTIC_REPOSITORY"],
        captured["RESTIC_PASSWORD"],
        "snapshots",
        **rest,
    )
    assert late.returncode != 0
    assert "401" in late.stderr or "Unauthorized" in late.stderr
    central = f"s3:{local_cluster.s3_endpoint}/{ops_bucket}/repositories/{OPS}"
    keys = {
        "AWS_ACCESS_KEY_ID": local_cluster.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": local_cluster.s3_secret_key,
    }
    opened = _restic_as(local_cluster, central, captured["RESTIC_PASSWORD"], "snapshots", **keys)
    assert opened.returncode != 0, "the mover's password opened the central repository"
    # A restore of that backup into the same namespace, and into another one (through a
    # scratch copy of the one snapshot), hand out nothing more.
    copy = f"{ns}-copy"
    local_cluster.create_namespace(copy)
    (data / "orders.csv").unlink()
    restore = {"backupRef": {"name": name}, "existingResourcePolicy": "skip"}
    restore["volumes"] = {"overwriteExisting": True}
    with (
        Watcher(local_cluster, ns, forbidden) as same,
        Watcher(local_cluster, copy, forbidden) as mapped,
    ):
        back = create_and_wait(local_cluster, OPS, "RestoreRequest", name, restore)
        assert back["status"]["phase"] == "Succeeded", back["status"]
        moved = create_and_wait(
            local_cluster,
            OPS,
            "RestoreRequest",
            f"{name}-mapped",
            {"backupRef": {"name": name}, "namespaceMapping": {ns: copy}},
        )
        assert moved["status"]["phase"] == "Succeeded", moved["status"]
    assert same.found == []
    assert mapped.found == []
    assert same.mover_secrets
    assert mapped.mover_secrets
    assert (data / "orders.csv").read_text() == "1,book\n2,pen\n"
    assert (local_cluster.pvc_path(copy, "data") / "orders.csv").read_text() == "1,book\n2,pen\n"
    assert mapped.mover_secrets[0]["RESTIC_PASSWORD"] != captured["RESTIC_PASSWORD"]
    scratch = local_cluster.s3_client().list_objects_v2(
        Bucket=ops_bucket, Prefix="scratch-repositories/"
    )
    assert not scratch.get("Contents"), "the scratch copy was not removed"
    kubectl(local_cluster, "delete", "namespace", copy, "--wait=false")


# ------------------------------------------------------------------------- a forged backup
def _forge_snapshot(
    tenant: Tenant,
    tmp: Path,
    objects: list[tuple[str, JSON | Path]],
    index_paths: list[str] | None = None,
) -> tuple[str, str]:
    """A restic snapshot of an export the tenant made itself, in its own repository."""
    root = tmp / f"export-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    index = []
    for rel, obj in objects:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, Path):
            path.symlink_to(obj)
            meta = {"namespace": tenant.namespace, "name": path.stem}
            api, kind = "v1", "ConfigMap"
        else:
            path.write_text(json.dumps(obj))
            meta, api, kind = obj["metadata"], obj["apiVersion"], obj["kind"]
        index.append(
            {
                "path": rel,
                "resource": rel.split("/")[1],
                "apiVersion": api,
                "kind": kind,
                "namespace": meta.get("namespace"),
                "name": meta["name"],
            }
        )
    for extra in index_paths or []:
        index.append(
            {
                "path": extra,
                "resource": "configmaps",
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "namespace": tenant.namespace,
                "name": "x",
            }
        )
    (root / "index.json").write_text(json.dumps({"formatVersion": 1, "objects": index}))
    access, secret_key = tenant.cluster.s3_tenant_keys
    repo = f"s3:{tenant.cluster.s3_endpoint}/{tenant.bucket}/repositories/{tenant.namespace}"
    keys = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret_key}
    if _restic_as(tenant.cluster, repo, TENANT_PASSWORD, "cat", "config", **keys).returncode != 0:
        init = _restic_as(tenant.cluster, repo, TENANT_PASSWORD, "init", **keys)
        assert init.returncode == 0, init.stderr
    made = _restic_as(
        tenant.cluster, repo, TENANT_PASSWORD, "backup", str(root), "--json", "--quiet", **keys
    )
    assert made.returncode == 0, made.stderr
    summary = [json.loads(line) for line in made.stdout.splitlines() if line.startswith("{")][-1]
    return str(summary["snapshot_id"]), str(root)


def _forge_manifest(tenant: Tenant, name: str, snapshot: str, root: str, **extra: Any) -> None:
    access, secret_key = tenant.cluster.s3_tenant_keys
    manifest = {
        "formatVersion": 2,
        "namespace": tenant.namespace,
        "name": name,
        "storageLocation": "own",
        "phase": "Succeeded",
        "namespaces": [tenant.namespace],
        "resources": {"total": 3, "snapshotId": snapshot},
        "export": {"root": root},
        "completionTime": "2026-11-30T10:00:00Z",
        **extra,
    }
    tenant.cluster.s3_client(access, secret_key).put_object(
        Bucket=tenant.bucket,
        Key=f"backups/{tenant.namespace}/{name}/backup.json",
        Body=json.dumps(manifest).encode(),
    )


def _configmap(ns: str, name: str, data: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def test_a_forged_backup_restores_nothing_beyond_the_tenants_rights(
    local_cluster: LocalCluster, tenant: Tenant, tmp_path: Path
) -> None:
    ns = tenant.namespace
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(victim)
    private = tmp_path / "operator-only"
    private.write_text("OPERATOR-ONLY-SECRET")
    private.chmod(0o600)
    escalate = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "grab", "namespace": ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}],
    }
    snapshot, root = _forge_snapshot(
        tenant,
        tmp_path,
        [
            (f"resources/configmaps/{ns}/ok.json", _configmap(ns, "ok", {"a": "b"})),
            (f"resources/rolebindings.rbac.authorization.k8s.io/{ns}/grab.json", escalate),
            (f"resources/configmaps/{ns}/steal.json", private),
        ],
    )
    _forge_manifest(tenant, "forged", snapshot, root)
    traversal, troot = _forge_snapshot(
        tenant, tmp_path, [], index_paths=[f"resources/configmaps/{ns}/../../../../{private}"]
    )
    _forge_manifest(tenant, "forged-path", traversal, troot)
    volume = {
        "namespace": victim,
        "pvc": "db",
        "mode": "filesystem",
        "result": "Succeeded",
        "snapshotId": snapshot,
    }
    _forge_manifest(tenant, "forged-foreign", snapshot, root, volumes=[volume])
    assert not tenant.can("*", "*")
    _own_location(tenant)  # its first probe re-discovers the forged entries
    forged = wait_for(lambda: _complete(local_cluster, ns, "forged"), 60, "the forged Backup")
    assert forged["status"]["phase"] == "Succeeded"  # it looks like a backup of the namespace
    foreign = wait_for(lambda: _complete(local_cluster, ns, "forged-foreign"), 60, "forged-foreign")
    assert foreign["status"]["phase"] == "Failed"
    assert reason(foreign) == "ManifestOutOfScope"
    # Restored by the tenant: only what the tenant may do itself.
    done = tenant.create_and_wait("RestoreRequest", "use-forged", {"backupRef": {"name": "forged"}})
    assert done["status"]["phase"] == "PartiallyFailed", done["status"]
    errors = "\n".join(done["status"]["errors"])
    assert "rolebindings.rbac.authorization.k8s.io" in errors
    assert "grab" in errors
    assert "steal" in errors
    assert get(local_cluster, ns, "configmap", "ok")["data"] == {"a": "b"}
    assert (
        kubectl(local_cluster, "get", "-n", ns, "rolebinding", "grab", check=False).returncode != 0
    )
    everything = kubectl(local_cluster, "get", "configmaps", "-n", ns, "-o", "json").stdout
    assert "OPERATOR-ONLY-SECRET" not in everything
    assert not tenant.can("*", "*")
    path = tenant.create_and_wait(
        "RestoreRequest", "use-path", {"backupRef": {"name": "forged-path"}}
    )
    assert reason(path) == "IndexInvalid", path["status"]
    refused = tenant.create_and_wait(
        "RestoreRequest", "use-foreign", {"backupRef": {"name": "forged-foreign"}}
    )
    assert reason(refused) == "BackupNotRestorable"
    # Nothing reached the victim namespace.
    for kind in ("persistentvolumeclaims", "jobs", "configmaps"):
        listed = kubectl(local_cluster, "get", kind, "-n", victim, "-o", "name").stdout.split()
        assert [n for n in listed if "kube-root-ca" not in n] == [], (kind, listed)
    kubectl(local_cluster, "delete", "namespace", victim, "--wait=false")


def _complete(cluster: LocalCluster, ns: str, name: str) -> JSON | None:
    found = kubectl(cluster, "get", "-n", ns, "backup", name, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    obj: JSON = json.loads(found.stdout)
    return obj if condition(obj, "Complete") else None


# ------------------------------------------------------------------------ revocations stay
def test_a_restore_does_not_undo_a_revocation(local_cluster: LocalCluster, tenant: Tenant) -> None:
    ns = tenant.namespace
    _own_location(tenant)
    apply(
        local_cluster,
        ns,
        {**_binding("extra", "cluster-admin", "tenant", ns)},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "quota"},
            "spec": {"hard": {"pods": "10"}},
        },
    )
    before = tenant.create_and_wait("Backup", "before-cut", {"storageLocation": "own"})
    assert before["status"]["phase"] == "Succeeded", before["status"]
    # The cluster admin revokes the binding and cuts the quota.
    kubectl(local_cluster, "delete", "-n", ns, "rolebinding", "extra")
    kubectl(
        local_cluster,
        "patch",
        "-n",
        ns,
        "resourcequota",
        "quota",
        "--type=merge",
        "-p",
        '{"spec": {"hard": {"pods": "2"}}}',
    )
    undo = tenant.create_and_wait(
        "RestoreRequest",
        "undo",
        {"backupRef": {"name": "before-cut"}, "existingResourcePolicy": "update"},
    )
    assert undo["status"]["phase"] == "PartiallyFailed", undo["status"]
    errors = "\n".join(undo["status"]["errors"])
    assert f"rolebindings.rbac.authorization.k8s.io {ns}/extra" in errors
    assert f"resourcequotas {ns}/quota" in errors
    assert (
        kubectl(local_cluster, "get", "-n", ns, "rolebinding", "extra", check=False).returncode != 0
    )
    assert get(local_cluster, ns, "resourcequota", "quota")["spec"]["hard"]["pods"] == "2"


# -------------------------------------------------------------------------- refusals with reasons
def test_refusals_name_their_reason(local_cluster: LocalCluster, tenant: Tenant) -> None:
    ns = tenant.namespace
    _own_location(tenant)
    other = f"other-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(other)
    policy = {"apiVersion": API, "kind": "BackupPolicy", "metadata": {"name": "reach"}}
    policy["spec"] = {"storageLocation": "own", "selection": {"namespaces": [other]}}
    tenant.apply(policy)

    def not_ready() -> JSON | None:
        found = get(local_cluster, ns, "backuppolicy", "reach")
        ready = condition(found, "Ready") or {}
        return found if ready.get("reason") == "NamespaceNotAllowed" else None

    found = wait_for(not_ready, 30, "the policy to be refused")
    assert (condition(found, "Ready") or {})["status"] == "False"
    own = tenant.create_and_wait("Backup", "own", {"storageLocation": "own"})
    assert own["status"]["phase"] == "Succeeded", own["status"]
    roles = tenant.create_and_wait(
        "RestoreRequest",
        "roles",
        {"backupRef": {"name": "own"}, "includedResources": ["clusterroles"]},
    )
    assert reason(roles) == "ClusterScopeNotAllowed"
    db = {"name": "pg", "type": "postgresql", "service": {"name": "pg", "namespace": other}}
    dump = tenant.create_and_wait(
        "Backup", "foreign-db", {"storageLocation": "own", "databases": [db]}
    )
    assert reason(dump) == "NamespaceNotAllowed"
    assert "pg" in (condition(dump, "Succeeded") or {})["message"]
    # The tenant cannot write status (a Succeeded it made up) nor read another namespace.
    patched = tenant.kubectl(
        "patch",
        "backup",
        "foreign-db",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Succeeded"}}',
        check=False,
    )
    assert get(local_cluster, ns, "backup", "foreign-db")["status"]["phase"] == "Failed", patched
    assert not tenant.can("get", "secrets", other)
    kubectl(local_cluster, "delete", "namespace", other, "--wait=false")


def test_a_tenants_drill_stays_in_an_operator_owned_namespace(
    local_cluster: LocalCluster, tenant: Tenant
) -> None:
    """A tenant's drill restores into a scratch namespace the tenant cannot read or change,
    without the tenant's RoleBindings (which would grant it rights there), and only of its
    own backups."""
    ns = tenant.namespace
    _own_location(tenant)
    tenant.apply(_configmap(ns, "settings", {"mode": "production"}))
    own = tenant.create_and_wait("Backup", "own", {"storageLocation": "own"})
    assert own["status"]["phase"] == "Succeeded", own["status"]
    failing = {"name": "fail", "image": "busybox", "command": ["sh", "-c", "exit 1"]}
    drill = tenant.create_and_wait(
        "BackupVerification",
        "drill",
        {"backupRef": {"name": "own"}, "keepOnFailure": "1h",
         "checks": {"repository": False, "probes": [failing]}},
        timeout=300,
    )  # fmt: skip
    assert drill["status"]["phase"] == "Failed", drill["status"]
    (scratch,) = drill["status"]["scratchNamespaces"]
    assert get(local_cluster, scratch, "configmap", "settings")["data"] == {"mode": "production"}
    # The tenant's own admin binding is in the backup; a drill does not restore it.
    assert own["status"]["resources"]["byKind"]["rolebindings.rbac.authorization.k8s.io"] >= 1
    bindings = kubectl(local_cluster, "get", "rolebindings", "-n", scratch, "-o", "name").stdout
    assert "tenant-admin" not in bindings, bindings
    for verb, resource in (("get", "configmaps"), ("get", "secrets"), ("create", "pods"),
                           ("delete", "networkpolicies"), ("patch", "namespaces")):  # fmt: skip
        assert not tenant.can(verb, resource, scratch), f"tenant can {verb} {resource}"
    # Another namespace's backup cannot be named: references stay in the drill's namespace.
    other = tenant.create_and_wait(
        "BackupVerification", "other", {"backupRef": {"name": f"good-{OPS}"}}
    )
    assert reason(other) == "BackupNotFound", other["status"]
    tenant.kubectl("delete", "backupverification", "drill")
    wait_for(
        lambda: kubectl(local_cluster, "get", "ns", scratch, check=False).returncode != 0,
        180,
        f"{scratch} to be removed",
    )
