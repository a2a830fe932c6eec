"""TEST-ONLY stand-in for a CSI driver with snapshot support, for the node-agent cluster.

There is no storage system behind the node agent's PVCs (they are local directories), so this
plays the parts of the CSI snapshot controller and provisioner, by polling:

- installs minimal VolumeSnapshot and VolumeSnapshotClass CRDs (snapshot.storage.k8s.io/v1);
- a VolumeSnapshot of a PVC: copies the PVC's directory (`cp -a`, so ownership, modes,
  timestamps, symlinks and sparseness survive) and marks it readyToUse — except when its
  class is named `never-ready`, which lets tests produce a snapshot that never becomes ready;
- a PVC whose dataSource is a VolumeSnapshot: fills its directory from the snapshot copy and
  marks it Bound; other PVCs are marked Bound as they are (the agent mounts them anyway).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localcluster.kube import MERGE_PATCH, KubeError

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster

log = logging.getLogger(__name__)
JSON = dict[str, Any]
GROUP = "snapshot.storage.k8s.io"
NEVER_READY = "never-ready"


def _crd(kind: str, plural: str, scope: str) -> JSON:
    loose = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        # *.k8s.io groups are protected; the upstream snapshot CRDs carry the same annotation.
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {
                "api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter"
            },
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}} if scope == "Namespaced" else {},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": loose,
                                "status": loose,
                                "driver": {"type": "string"},
                                "deletionPolicy": {"type": "string"},
                            },
                        }
                    },
                }
            ],
        },
    }


class CsiStandIn:
    def __init__(self, cluster: LocalCluster, interval: float = 0.2) -> None:
        self.cluster = cluster
        self.kube = cluster.kube
        self.root = cluster.workdir / "csi-snapshots"
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="csi-standin", daemon=True)

    def install_crds(self) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for crd in (
            _crd("VolumeSnapshot", "volumesnapshots", "Namespaced"),
            _crd("VolumeSnapshotClass", "volumesnapshotclasses", "Cluster"),
        ):
            try:
                self.kube.post(path, crd)
            except KubeError as err:
                if err.status != 409:
                    raise
        for plural in ("volumesnapshots", "volumesnapshotclasses"):
            self._wait_established(f"{path}/{plural}.{GROUP}")

    def _wait_established(self, path: str) -> None:
        for _ in range(300):
            crd = self.kube.get(path)
            if any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            ):
                return
            self._stop.wait(0.1)
        raise TimeoutError(f"{path} not Established")

    def start(self) -> CsiStandIn:
        self.install_crds()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._snapshots()
                self._claims()
            except Exception:
                log.exception("csi stand-in pass failed")
            self._stop.wait(self.interval)

    def _snapshot_dir(self, namespace: str, name: str) -> Path:
        return self.root / namespace / name

    def _snapshots(self) -> None:
        for snap in self.kube.get(f"/apis/{GROUP}/v1/volumesnapshots").get("items", []):
            meta, spec = snap["metadata"], snap.get("spec") or {}
            if (snap.get("status") or {}).get("readyToUse"):
                continue
            if spec.get("volumeSnapshotClassName") == NEVER_READY:
                continue
            source = (spec.get("source") or {}).get("persistentVolumeClaimName")
            if not source:
                continue
            target = self._snapshot_dir(meta["namespace"], meta["name"])
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = self.cluster.pvc_path(meta["namespace"], source)
            target.mkdir()
            subprocess.run(["cp", "-a", "--sparse=always", f"{src}/.", f"{target}/"], check=True)
            status = {
                "readyToUse": True,
                "restoreSize": "1Gi",
                "creationTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            self.kube.patch(
                f"/apis/{GROUP}/v1/namespaces/{meta['namespace']}/volumesnapshots/"
                f"{meta['name']}/status",
                {"status": status},
                content_type=MERGE_PATCH,
            )

    def _claims(self) -> None:
        for pvc in self.kube.get("/api/v1/persistentvolumeclaims").get("items", []):
            meta, spec = pvc["metadata"], pvc.get("spec") or {}
            if (pvc.get("status") or {}).get("phase") == "Bound" or meta.get("deletionTimestamp"):
                continue
            source = spec.get("dataSource") or {}
            if source.get("kind") == "VolumeSnapshot":
                snap = self._snapshot_dir(meta["namespace"], source["name"])
                if not snap.is_dir():
                    continue  # not taken yet; stays Pending like a real provisioner
                target = self.cluster.pvc_path(meta["namespace"], meta["name"])
                subprocess.run(
                    ["cp", "-a", "--sparse=always", f"{snap}/.", f"{target}/"], check=True
                )
            self.kube.patch(
                f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/"
                f"{meta['name']}/status",
                {
                    "status": {
                        "phase": "Bound",
                        "accessModes": spec.get("accessModes"),
                        "capacity": {
                            "storage": ((spec.get("resources") or {}).get("requests") or {}).get(
                                "storage", "1Gi"
                            )
                        },
                    }
                },
                content_type=MERGE_PATCH,
            )
