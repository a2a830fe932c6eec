"""The CLI on what the operator really made (#16): the download of a real backup has the
layout docs/backup-format.md shows, sizes are human in `kubectl get` and the CLI and raw in
JSON, and the disaster-recovery runbook's commands run exactly as docs/disaster-recovery.md
prints them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from localcluster import binaries
from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl
from localcluster.objects import apply, create_and_wait, get
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.sample_app import delete_namespace_and_wait
from safehold.api.units import human_bytes

pytestmark = pytest.mark.usefixtures("operator", "ops_bucket")

REPO = Path(__file__).resolve().parents[2]
CONSOLE = re.compile(r"^( *)```console\n(.*?)^\1```", re.S | re.M)


def environment(cluster: LocalCluster) -> dict[str, str]:
    """What a user's shell has: the kubeconfig, restic, kubectl and the kubectl plugin."""
    path = [Path(sys.executable).parent, binaries.find("kubectl").parent]
    return dict(
        os.environ,
        KUBECONFIG=str(cluster.kubeconfig),
        SAFEHOLD_RESTIC=str(binaries.find("restic")),
        PATH=":".join([*map(str, path), "/usr/bin", "/bin"]),
    )


def shell(cluster: LocalCluster, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    if argv[0] == "safehold":  # the package under test, whatever is installed elsewhere
        argv = [sys.executable, "-m", "safehold", *argv[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env=environment(cluster), cwd=cwd)  # fmt: skip


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_download_of_a_real_backup_has_the_documented_layout(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    apply(local_cluster, namespace, configmap("settings", {"mode": "production"}))
    name = f"dl-{namespace}"
    spec = {"storageLocation": "main", "selection": {"namespaces": [namespace]}}
    done = create_and_wait(local_cluster, OPS, "Backup", name, spec)
    status = done["status"]
    assert status["phase"] == "Succeeded", status

    result = shell(local_cluster, f"safehold -n {OPS} backup download {name} -o b.tar", tmp_path)
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "b.tar") as archive:
        names = archive.getnames()
        member = archive.extractfile("index.json")
        assert member is not None
        index_bytes = member.read()
    index = json.loads(index_bytes)
    files = {entry["path"] for entry in index["objects"]}
    assert f"resources/configmaps/{namespace}/settings.json" in files
    directories = {str(parent) for path in files for parent in Path(path).parents} - {"."}
    # exactly index.json and the objects under resources/, nothing of the operator's paths
    assert sorted(names) == sorted({"index.json", *files, *directories})
    assert hashlib.sha256(index_bytes).hexdigest() == status["resources"]["sha256"]

    # sizes: human in kubectl's column and the CLI's table, bytes in JSON
    size = status["sizeBytes"]
    assert isinstance(size, int)
    assert size > 0
    assert status["size"] == human_bytes(size)
    printed = kubectl(local_cluster, "get", "shbk", name, "-n", OPS).stdout.splitlines()
    assert printed[1][printed[0].index("SIZE") :].split()[0] == human_bytes(size)
    listed = shell(local_cluster, f"safehold -n {OPS} backup list", tmp_path).stdout.splitlines()
    row = next(line for line in listed if line.split()[0] == name)
    assert row[listed[0].index("SIZE") :].split()[0] == human_bytes(size)
    as_json = json.loads(shell(local_cluster, f"safehold -n {OPS} backup list -o json",
                               tmp_path).stdout)  # fmt: skip
    [item] = [i for i in as_json["items"] if i["metadata"]["name"] == name]
    assert item["status"]["sizeBytes"] == size


def documented_runbook() -> tuple[list[str], str]:
    """Step 5 of docs/disaster-recovery.md: its console commands, and the inline one of the
    kubectl plugin form."""
    text = (REPO / "docs/disaster-recovery.md").read_text()
    block = next(b for _, b in CONSOLE.findall(text) if "recover-dry" in b)
    commands = [line.strip()[2:] for line in block.splitlines() if line.strip()[:2] == "$ "]
    plugin = re.search(r"`(kubectl safehold [^`]*recover-dry)`", text)
    assert plugin is not None
    return commands, plugin.group(1)


def test_disaster_recovery_runbook_commands_run_as_documented(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    commands, plugin = documented_runbook()
    assert commands[0].startswith("safehold -n safehold-system restore create recover-dry")
    backup = re.search(r"--from-backup (\S+)", commands[0])
    assert backup is not None
    app = f"dr-{uuid.uuid4().hex[:6]}"
    local_cluster.create_namespace(app)
    apply(local_cluster, app, configmap("settings", {"mode": "production"}))
    spec = {"storageLocation": "main", "selection": {"namespaces": [app]}}
    taken = create_and_wait(local_cluster, OPS, "Backup", backup.group(1), spec)
    assert taken["status"]["phase"] == "Succeeded", taken["status"]
    delete_namespace_and_wait(local_cluster, app)

    outputs = {}
    for command in [*commands, plugin]:
        outputs[command] = result = shell(local_cluster, command, tmp_path)
        if command != commands[0]:
            assert result.returncode == 0, f"`{command}`: {result.stderr}"
    done = get(local_cluster, OPS, "restorerequest", "recover")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert get(local_cluster, app, "configmap", "settings")["data"] == {"mode": "production"}
    assert "Dry run:        yes" in outputs[commands[1]].stdout
    assert outputs[plugin].stdout.splitlines()[:3] == outputs[commands[1]].stdout.splitlines()[:3]
    listed = [line.split()[0] for line in outputs[commands[3]].stdout.splitlines()[1:]]
    assert {"recover-dry", "recover"} <= set(listed)
    kubectl(local_cluster, "delete", "namespace", app, "--wait=false")

    # The dry run's own command: its exit status is its outcome.
    dry = get(local_cluster, OPS, "restorerequest", "recover-dry")
    assert dry["spec"]["dryRun"] is True
    # After the namespace is gone, the dry run simulates the plan in order: nothing fails.
    assert dry["status"]["phase"] == "Succeeded", dry["status"]
    assert outputs[commands[0]].returncode == 0, outputs[commands[0]].stderr
