"""The repository password Secret's trailing newline (#16), through the operator against the
real API server, SeaweedFS and restic: a Secret made with `--from-file` is the password typed
by hand (the manual-recovery commands of docs/disaster-recovery.md open the repository), and
a repository created with the newline, as Safehold did before, keeps working: probe, backup,
volume data in its derived namespace repository, restore, download, and the manual commands
with the newline; the location says so with a Warning condition and Event."""

from __future__ import annotations

import hmac
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl, wait_for
from localcluster.objects import API, apply, condition, create_and_wait, get, secret, wait_probed
from localcluster.operator import OPERATOR_NAMESPACE as OPS

pytestmark = pytest.mark.usefixtures("operator")

REPO = Path(__file__).resolve().parents[2]
# What a person types; the Secret's file holds it and a newline.
TYPED = "Tr0ub4dor-and-3"
PREFIX = "cluster-1"
CONSOLE = re.compile(r"^( *)```console\n(.*?)^\1```", re.S | re.M)


def documented_block(marker: str) -> list[str]:
    """The `$ ` lines of the console block of docs/disaster-recovery.md holding `marker`."""
    text = (REPO / "docs/disaster-recovery.md").read_text()
    for _indent, block in CONSOLE.findall(text):
        if marker in block:
            return [line.strip()[2:] for line in block.splitlines() if line.strip()[:2] == "$ "]
    raise AssertionError(f"no console block with {marker!r} in docs/disaster-recovery.md")


def manual_recovery(
    cluster: LocalCluster, bucket: str, namespace: str, typed: str, tmp: Path, *, newline: bool
) -> subprocess.CompletedProcess[str]:
    """The documented manual-recovery commands, run by bash with the password typed on stdin
    (and the documented line that adds the newline, for an old repository)."""
    lines = documented_block("read -rs RESTIC_PASSWORD")
    if newline:
        add = documented_block('"$RESTIC_PASSWORD"$')
        lines = [*lines[:-1], *add, lines[-1]]
    script = "\n".join(lines)
    for example, real in [
        ("AKIA...", cluster.s3_access_key),
        ("AWS_SECRET_ACCESS_KEY=...", f"AWS_SECRET_ACCESS_KEY={cluster.s3_secret_key}"),
        ("https://s3.example.com", cluster.s3_endpoint),
        ("acme-backups", bucket),
        ("repositories/safehold-system", f"repositories/{namespace}"),
    ]:
        assert example in script, example
        script = script.replace(example, real)
    env = {
        "PATH": f"{binaries.find('restic').parent}:/usr/bin:/bin",
        "HOME": str(tmp),
        "XDG_CACHE_HOME": str(tmp / "cache"),
    }
    return subprocess.run(
        ["bash", "-e", "-c", script], input=typed + "\n", env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def restic_at(
    cluster: LocalCluster, bucket: str, key: str, password: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "AWS_ACCESS_KEY_ID": cluster.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": cluster.s3_secret_key,
        "RESTIC_PASSWORD": password,
        "RESTIC_REPOSITORY": f"s3:{cluster.s3_endpoint}/{bucket}/{PREFIX}/{key}",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [str(binaries.find("restic")), "-o", "s3.bucket-lookup=path", "--no-cache", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def derived(password: str, owner: str, source: str) -> str:
    """docs/backup-format.md: the password of namespace-repositories/<owner>/<source>."""
    message = f"safehold.io/namespace-repository\0{owner}\0{source}".encode()
    return hmac.new(password.encode(), message, "sha256").hexdigest()


def make_location(
    cluster: LocalCluster, namespace: str, name: str, bucket: str, password_file: Path
) -> None:
    """A location whose password Secret is made as users do: `--from-file`."""
    kubectl(cluster, "create", "secret", "generic", f"{name}-pw", "-n", namespace,
            f"--from-file=password={password_file}")  # fmt: skip
    creds = {"accessKeyId": cluster.s3_access_key, "secretAccessKey": cluster.s3_secret_key}
    location = {
        "apiVersion": API,
        "kind": "BackupStorageLocation",
        "metadata": {"name": name},
        "spec": {
            "endpoint": cluster.s3_endpoint,
            "bucket": bucket,
            "prefix": PREFIX,
            "forcePathStyle": True,
            "syncPeriod": "10s",
            "credentialsSecret": {"name": f"{name}-s3"},
            "repositoryPasswordSecret": {"name": f"{name}-pw"},
        },
    }
    apply(cluster, namespace, secret(f"{name}-s3", creds), location)


def location_events(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(cluster, "get", "events", "-n", namespace, "--field-selector",
                  f"involvedObject.name={name}", "-o", "json").stdout  # fmt: skip
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


@pytest.fixture
def bucket(local_cluster: LocalCluster) -> str:
    name = f"pw-{uuid.uuid4().hex[:10]}"
    local_cluster.create_bucket(name)
    return name


def test_a_secret_from_a_file_with_a_newline_is_the_password_typed_by_hand(
    local_cluster: LocalCluster, namespace: str, bucket: str, tmp_path: Path
) -> None:
    password_file = tmp_path / "repository-password.txt"
    password_file.write_text(TYPED + "\n")  # as `echo ... >` or an editor leaves it
    make_location(local_cluster, namespace, "primary", bucket, password_file)
    stored = get(local_cluster, namespace, "secret", "primary-pw")["data"]["password"]
    assert stored.endswith("Cg==")  # base64 of a trailing "\n": the Secret kept it

    obj = wait_probed(local_cluster, namespace, "primary")
    ready = condition(obj, "Ready") or {}
    assert (ready.get("status"), ready.get("reason")) == ("True", "Available"), obj["status"]
    assert ready["message"].endswith("repository created")
    assert condition(obj, "RepositoryPasswordNewline") is None

    done = create_and_wait(local_cluster, namespace, "Backup", "b1", {"storageLocation": "primary"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    snapshot = done["status"]["resources"]["snapshotId"]

    # The documented manual recovery, the password typed at the prompt, opens it ...
    typed = manual_recovery(local_cluster, bucket, namespace, TYPED, tmp_path, newline=False)
    assert typed.returncode == 0, typed.stderr
    assert snapshot[:8] in typed.stdout
    # ... and the Secret's bytes with the newline do not: it was created without it.
    verbatim = restic_at(local_cluster, bucket, f"repositories/{namespace}", TYPED + "\n",
                         "snapshots")  # fmt: skip
    assert verbatim.returncode != 0
    assert "wrong password" in verbatim.stderr


def _legacy_repositories(cluster: LocalCluster, bucket: str, source: str, old: str) -> None:
    """What Safehold before #16 left: the location's repository created with the Secret's
    value verbatim (newline included), and the namespace repository of `source` created
    with the password derived from that value."""
    for key, password in [
        (f"repositories/{OPS}", old),
        (f"namespace-repositories/{OPS}/{source}", derived(old, OPS, source)),
    ]:
        made = restic_at(cluster, bucket, key, password, "init")
        assert made.returncode == 0, made.stderr


def test_a_repository_created_with_the_newline_keeps_working(
    local_cluster: LocalCluster, namespace: str, bucket: str, tmp_path: Path
) -> None:
    old = TYPED + "\n"
    _legacy_repositories(local_cluster, bucket, namespace, old)
    password_file = tmp_path / "pw.txt"
    password_file.write_text(old)
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    make_location(local_cluster, OPS, name, bucket, password_file)

    obj = wait_probed(local_cluster, OPS, name)
    ready = condition(obj, "Ready") or {}
    assert (ready.get("status"), ready.get("reason")) == ("True", "Available"), obj["status"]
    warning = condition(obj, "RepositoryPasswordNewline") or {}
    assert (warning.get("status"), warning.get("reason")) == ("True", "PasswordNeedsNewline")
    assert "followed by a newline" in warning["message"]
    assert TYPED not in json.dumps(obj)

    def warned() -> list[dict[str, Any]] | None:
        found = [e for e in location_events(local_cluster, OPS, name)
                 if e["reason"] == "PasswordNeedsNewline"]  # fmt: skip
        return found or None

    [event] = wait_for(warned, 30, "the PasswordNeedsNewline Event")
    assert event["type"] == "Warning"
    assert TYPED not in event["message"]

    # A backup of objects and of PVC data goes into the old repositories, with the old
    # passwords (a derivation from the stripped one would be refused by the namespace one).
    data = local_cluster.pvc_path(namespace, "data")
    data.mkdir(parents=True, exist_ok=True)
    (data / "orders.csv").write_text("1,book\n2,pen\n")
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(local_cluster, namespace, pvc)
    backup = f"{name}-b1"
    spec = {
        "storageLocation": name,
        "selection": {"namespaces": [namespace], "includedResources": ["persistentvolumeclaims"]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    done = create_and_wait(local_cluster, OPS, "Backup", backup, spec, timeout=240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    [volume] = done["status"]["volumes"]
    assert volume["repository"] == f"namespace-repositories/{OPS}/{namespace}"
    in_volumes = restic_at(local_cluster, bucket, volume["repository"],
                           derived(old, OPS, namespace), "snapshots", "--json")  # fmt: skip
    assert in_volumes.returncode == 0, in_volumes.stderr
    assert volume["snapshotId"] in {s["id"] for s in json.loads(in_volumes.stdout)}
    in_main = restic_at(local_cluster, bucket, f"repositories/{OPS}", old, "snapshots", "--json")
    assert in_main.returncode == 0, in_main.stderr
    snapshot = done["status"]["resources"]["snapshotId"]
    assert snapshot in {s["id"] for s in json.loads(in_main.stdout)}

    # The data comes back from there.
    (data / "orders.csv").unlink()
    restore = {"backupRef": {"name": backup}, "volumes": {"overwriteExisting": True}}
    back = create_and_wait(local_cluster, OPS, "RestoreRequest", backup, restore, timeout=240)
    assert back["status"]["phase"] == "Succeeded", back["status"]
    assert (data / "orders.csv").read_text() == "1,book\n2,pen\n"

    # The CLI's download opens it as the operator does.
    target = tmp_path / "b1.tar"
    env = dict(os.environ, SAFEHOLD_RESTIC=str(binaries.find("restic")))
    downloaded = subprocess.run(
        [sys.executable, "-m", "safehold", "-n", OPS, "backup", "download", backup,
         "-o", str(target), "--kubeconfig", str(local_cluster.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert downloaded.returncode == 0, downloaded.stderr
    with tarfile.open(target) as archive:
        assert "index.json" in archive.getnames()

    # By hand: the documented line that adds the newline opens it; without it, it does not.
    manual = manual_recovery(local_cluster, bucket, OPS, TYPED, tmp_path, newline=True)
    assert manual.returncode == 0, manual.stderr
    assert snapshot[:8] in manual.stdout
    plain = manual_recovery(local_cluster, bucket, OPS, TYPED, tmp_path, newline=False)
    assert plain.returncode != 0
    assert "wrong password" in plain.stderr

    # After a disaster the Secret is re-created from the password typed by hand, without
    # the newline: the old repository still opens.
    kubectl(local_cluster, "delete", "secret", "-n", OPS, f"{name}-pw")
    kubectl(local_cluster, "create", "secret", "generic", f"{name}-pw", "-n", OPS,
            f"--from-literal=password={TYPED}")  # fmt: skip
    probed_at = obj["status"]["lastProbeTime"]

    def reprobed() -> dict[str, Any] | None:
        now = get(local_cluster, OPS, "backupstoragelocation", name)
        return now if now["status"]["lastProbeTime"] != probed_at else None

    again = wait_for(reprobed, 60, "a new probe of the location")
    assert (condition(again, "Ready") or {}).get("status") == "True", again["status"]
    assert (condition(again, "RepositoryPasswordNewline") or {}).get("status") == "True"
    second = create_and_wait(local_cluster, OPS, "Backup", f"{name}-b2", spec, timeout=240)
    assert second["status"]["phase"] == "Succeeded", second["status"]
