"""Volume movers without a cluster: who they run as (restricted, or the opt-in root mover),
what they make of restic's error lines, and how they read restic's modes and times."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from safehold.api.errors import Failure
from safehold.movers.volume import _nanoseconds, unix_mode, unreadable_message
from safehold.planning.builders import (
    ROOT_BACKUP_CAPABILITIES,
    MoverPod,
    MoverSpec,
    build_job,
)
from safehold.planning.volumes import root_mover
from safehold.storage.restic import BackupSummary, _BackupErrors


def _namespace(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "shop", "labels": labels}}


ENFORCE = "pod-security.kubernetes.io/enforce"
MOVER = "safehold.io/volume-mover"


def test_root_mover_only_where_the_admin_opted_in_and_pod_security_admits_it() -> None:
    assert root_mover(_namespace()) is False
    assert root_mover(_namespace(**{ENFORCE: "baseline"})) is False  # baseline alone: no
    assert root_mover(_namespace(**{ENFORCE: "baseline", MOVER: "root"})) is True
    assert root_mover(_namespace(**{ENFORCE: "privileged", MOVER: "root"})) is True
    assert root_mover(_namespace(**{ENFORCE: "privileged", MOVER: "restricted"})) is False
    for labels in ({MOVER: "root"}, {ENFORCE: "restricted", MOVER: "root"}):
        with pytest.raises(Failure) as err:
            root_mover(_namespace(**labels))
        assert err.value.reason == "RootMoverNotAdmitted"
        assert "namespace shop asks for the root mover" in err.value.message
    with pytest.raises(Failure) as err:
        root_mover(_namespace(**{ENFORCE: "baseline", MOVER: "yes"}))
    assert err.value.reason == "InvalidMoverLabel"


def _pod(pod: MoverPod) -> tuple[dict[str, Any], dict[str, Any]]:
    job = build_job(MoverSpec("m", "shop", "volume-backup", {}, "m", [], pod=pod))
    spec = job["spec"]["template"]["spec"]
    return spec["securityContext"], spec["containers"][0]["securityContext"]


def test_restricted_and_root_mover_pods() -> None:
    pod, container = _pod(MoverPod(run_as_user=1000, run_as_group=1000, fs_group=1000))
    assert (pod["runAsNonRoot"], pod["runAsUser"], pod["fsGroup"]) == (True, 1000, 1000)
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True
    root = MoverPod(run_as_user=0, run_as_group=0, capabilities=ROOT_BACKUP_CAPABILITIES)
    pod, container = _pod(root)
    assert (pod["runAsNonRoot"], pod["runAsUser"], pod["runAsGroup"]) == (False, 0, 0)
    assert "fsGroup" not in pod
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True


def _error(item: str, during: str = "archival") -> bytes:
    doc = {
        "message_type": "error",
        "error": {"message": f"open {item}: permission denied"},
        "during": during,
        "item": item,
    }
    return json.dumps(doc).encode() + b"\n"


def test_unreadable_items_are_counted_once_and_the_first_kept() -> None:
    lines = [_error("/data/d", "scan"), _error("/data/d")]
    lines += [_error(f"/data/f{i}") for i in range(30)]
    lines.append(b'{"message_type":"exit_error","code":3,"message":"Warning: at least one"}\n')
    errors = _BackupErrors(io.BytesIO(b"".join(lines)))
    assert b"exit_error" in errors.stderr()
    assert errors.count == 31
    assert [u.path for u in errors.first[:2]] == ["/data/d", "/data/f0"]
    assert len(errors.first) == 10
    summary = BackupSummary("id", 1, 2, 3, 0.5, tuple(errors.first), errors.count)
    message = unreadable_message(summary, "/data")
    assert message.startswith("31 file(s) or directories could not be read as UID ")
    assert "d (permission denied), f0 (permission denied)" in message
    assert "f3 (permission denied) and 26 more;" in message


def test_restic_modes_and_times() -> None:
    assert unix_mode(2147484136) == 0o750  # a directory, drwxr-x---
    assert unix_mode((1 << 31) | (1 << 20) | 0o777) == 0o1777  # sticky /tmp
    assert unix_mode((1 << 23) | (1 << 22) | 0o755) == 0o6755
    assert _nanoseconds("2020-01-01T00:00:00Z") == 1577836800 * 10**9
    assert _nanoseconds("2026-12-02T00:09:47.182671714Z") % 10**9 == 182671714
    assert _nanoseconds("2020-01-01T01:00:00.5+01:00") == 1577836800 * 10**9 + 5 * 10**8
