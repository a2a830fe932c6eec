"""Two operator replicas, and the active one dies in the middle of a backup.

Runs after the round trip (tests/e2e/roundtrip.py) on the same cluster: the chart is
installed, location `primary` is Ready and the application namespace holds the PVC `data`.
`helm upgrade --set replicas=2` turns Kopf peering on; the replica with the highest peering
priority is active, the other stands by. A Backup of the PVC (64 MiB more, so that the mover is
still running) starts; the active replica's pod is force-deleted while its mover Job
runs. What must hold:

- another replica finishes the run (its run lease, `safehold-run-<uid>`, changes holder);
- at no moment do two mover pods of the run exist (the new runner removes the old Job, and
  waits until its pods are gone, before it starts its own);
- the Backup ends Succeeded under the same run (status.runUid unchanged) with every file.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from e2e.roundtrip import APP, OPS, Platform, apply, get, run_job, wait_complete
from localcluster.helpers import wait_for

JSON = dict[str, Any]
API = "safehold.io/v1alpha1"
BACKUP = "shop-failover"
OPERATOR_PODS = "app.kubernetes.io/name=safehold,app.kubernetes.io/component=operator"
BIG = "head -c 67108864 /dev/urandom > /data/failover.bin && find /data -type f | wc -l"


def _operator_pods(platform: Platform) -> list[JSON]:
    out = platform.kubectl("-n", OPS, "get", "pods", "-l", OPERATOR_PODS, "-o", "json")
    return [
        p
        for p in json.loads(out)["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions") or []
        )
    ]


def _active_replica(platform: Platform, pods: list[str]) -> str | None:
    """The pod whose Kopf peer has the highest priority, once every pod has a live peer."""
    peering = json.loads(platform.kubectl("get", "clusterkopfpeering", "safehold", "-o", "json"))
    peers: dict[str, int] = {}
    for peer_id, peer in (peering.get("status") or {}).items():
        for pod in pods:
            if f"@{pod}/" in peer_id or peer_id == pod:
                peers[pod] = max(peers.get(pod, -1), int(peer["priority"]))
    if set(peers) != set(pods):
        return None
    return max(peers, key=lambda pod: peers[pod])


class MoverPodWatch:
    """Polls the mover pods of Backup `backup`; records every one and the most at once."""

    def __init__(self, platform: Platform, backup: str) -> None:
        self.platform = platform
        self.selector = f"app.kubernetes.io/component=mover,safehold.io/backup={backup}"
        self.most = 0
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                out = self.platform.kubectl(
                    "-n", APP, "get", "pods", "-l", self.selector, "-o", "json"
                )
            except Exception:  # noqa: S112 - a failed poll is retried
                continue
            pods = [
                p["metadata"]["name"]
                for p in json.loads(out)["items"]
                if p.get("status", {}).get("phase") in {"Pending", "Running"}
            ]
            self.seen |= set(pods)
            self.most = max(self.most, len(pods))
            time.sleep(0.2)

    def __enter__(self) -> MoverPodWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def run_failover(platform: Platform, chart: str) -> dict[str, Any]:
    """The scenario above; returns what a reader of the log wants to know."""
    apply_ready = get(platform, OPS, "backupstoragelocation", "primary")
    assert any(
        c["type"] == "Ready" and c["status"] == "True" for c in apply_ready["status"]["conditions"]
    ), "location primary is not Ready: the round trip before this test set it up"
    files = int(run_job(platform, "failover-seed", BIG).strip())

    platform.helm(
        "upgrade", "safehold", chart, "--namespace", OPS, "--reuse-values",
        "--set", "replicas=2", "--wait", "--timeout", "5m",
    )  # fmt: skip
    pods = wait_for(
        lambda: (names if len(names := [p["metadata"]["name"] for p in _operator_pods(platform)])
                 == 2 else None),
        240, "two ready operator replicas", interval=1,
    )  # fmt: skip
    active = wait_for(lambda: _active_replica(platform, pods), 120, "both peers", interval=1)
    standby = next(p for p in pods if p != active)

    body = {
        "storageLocation": "primary",
        "selection": {"namespaces": [APP], "includedResources": ["persistentvolumeclaims"]},
        "volumes": {"rules": [{"mode": "filesystem"}]},
    }
    with MoverPodWatch(platform, BACKUP) as watch:
        apply(platform, OPS, {"apiVersion": API, "kind": "Backup",
                              "metadata": {"name": BACKUP}, "spec": body})  # fmt: skip
        result = _kill_and_wait(platform, active, watch)
    status = result.pop("status")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["runUid"] == result.pop("run uid"), status
    (vol,) = status["volumes"]
    assert (vol["pvc"], vol["result"], vol["files"]) == ("data", "Succeeded", files), vol
    assert watch.most == 1, f"{watch.most} mover pods at once: {sorted(watch.seen)}"
    assert len(watch.seen) >= 2, f"the run was not redone by the new holder: {watch.seen}"
    return {"active": active, "standby": standby, "mover pods": sorted(watch.seen), **result}


def _kill_and_wait(platform: Platform, active: str, watch: MoverPodWatch) -> dict[str, Any]:
    """Force-delete the active replica's pod once the run's mover pod exists; wait until
    another replica holds the run lease and the Backup is complete."""
    backup = get(platform, OPS, "backup", BACKUP)
    uid = backup["metadata"]["uid"]
    lease = f"safehold-run-{uid}"

    def holder() -> str | None:
        try:
            doc = get(platform, OPS, "lease", lease)
        except Exception:
            return None
        return str((doc.get("spec") or {}).get("holderIdentity") or "") or None

    assert wait_for(holder, 120, "the run lease", interval=0.5) == active
    started = time.monotonic()
    wait_for(lambda: watch.seen or None, 180, "the mover pod", interval=0.2)
    run_uid = get(platform, OPS, "backup", BACKUP)["status"]["runUid"]
    platform.kubectl("-n", OPS, "delete", "pod", active, "--grace-period=0", "--force",
                     "--wait=false")  # fmt: skip
    killed = time.monotonic()
    new_holder = wait_for(
        lambda: h if (h := holder()) not in {None, active} else None,
        300, "another replica to take the run lease over", interval=1,
    )  # fmt: skip
    took_over = time.monotonic()
    done = wait_complete(platform, "backup", BACKUP, timeout=600)
    return {
        "status": done["status"],
        "run uid": run_uid,
        "new holder": new_holder,
        "seconds from start to kill": round(killed - started, 1),
        "seconds from kill to takeover": round(took_over - killed, 1),
    }
