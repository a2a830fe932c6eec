"""A small dynamic provisioner for the real node: PVCs of one StorageClass get hostPath PVs.

The real node (`localcluster.node.RealNode`) has no storage system; kind ships the
local-path provisioner for the same job. This one does what that does, by polling, so the
end-to-end round trip is the same on both:

- installs the StorageClass `realnode-hostpath` (reclaim `Delete`, immediate binding);
- a Pending PVC of that class gets a directory under `<node root>/volumes/` (mode 0777, as
  local-path makes them, so pods of any UID can write) and a hostPath PV pre-bound to it;
  the real PV controller of the control plane binds the pair;
- a Released PV of the class is deleted with its directory, as `Delete` promises.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localcluster.kube import KubeError

if TYPE_CHECKING:
    from localcluster.node import RealNode

log = logging.getLogger(__name__)
JSON = dict[str, Any]
STORAGE_CLASS = "realnode-hostpath"
PROVISIONER = "localcluster.safehold.io/hostpath"


class HostPathProvisioner:
    def __init__(self, node: RealNode, interval: float = 0.3) -> None:
        self.kube = node.cluster.kube
        self.root = node.root / "volumes"
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hostpath-prov", daemon=True)

    def __enter__(self) -> HostPathProvisioner:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> HostPathProvisioner:
        self.root.mkdir(parents=True, exist_ok=True)
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        try:
            self.kube.post("/apis/storage.k8s.io/v1/storageclasses", storage_class)
        except KubeError as err:
            if err.status != 409:
                raise
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._provision()
                self._reclaim()
            except Exception:
                log.exception("hostpath provisioner pass failed")
            self._stop.wait(self.interval)

    def _directory(self, pv_name: str) -> Path:
        return self.root / pv_name

    def _provision(self) -> None:
        for pvc in self.kube.get("/api/v1/persistentvolumeclaims").get("items", []):
            meta, spec = pvc["metadata"], pvc.get("spec") or {}
            if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
                continue
            if (pvc.get("status") or {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
                continue
            name = f"pvc-{meta['uid']}"
            if self.kube.get_or_none(f"/api/v1/persistentvolumes/{name}") is not None:
                continue  # made on an earlier pass; the binder has not caught up yet
            path = self._directory(name)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            self.kube.post(
                "/api/v1/persistentvolumes",
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": name,
                        "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                    },
                    "spec": {
                        "capacity": {"storage": storage},
                        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": STORAGE_CLASS,
                        "volumeMode": spec.get("volumeMode") or "Filesystem",
                        "hostPath": {"path": str(path), "type": "Directory"},
                        "claimRef": {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "namespace": meta["namespace"],
                            "name": meta["name"],
                            "uid": meta["uid"],
                        },
                    },
                },
            )
            log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])

    def _reclaim(self) -> None:
        for pv in self.kube.get("/api/v1/persistentvolumes").get("items", []):
            meta, spec = pv["metadata"], pv.get("spec") or {}
            if spec.get("storageClassName") != STORAGE_CLASS:
                continue
            if (pv.get("status") or {}).get("phase") != "Released":
                continue
            if spec.get("persistentVolumeReclaimPolicy") != "Delete":
                continue
            shutil.rmtree(self._directory(meta["name"]), ignore_errors=True)
            try:
                self.kube.delete(f"/api/v1/persistentvolumes/{meta['name']}")
            except KubeError as err:
                if err.status != 404:
                    raise
            log.info("deleted %s and its directory", meta["name"])
