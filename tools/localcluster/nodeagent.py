"""A TEST-ONLY node agent: the local cluster's stand-in for a kubelet (and for kube-scheduler).

It is not a container runtime and gives no isolation whatsoever. What it does:

* registers a Node (default `safehold-local-node`, address 127.0.0.1) with a Ready condition,
  and keeps the condition and the node's heartbeat Lease in `kube-node-lease` fresh;
* watches Pods in all namespaces; binds every unscheduled Pod (scheduler `default-scheduler`)
  to its node through the `pods/binding` subresource -- node selectors, affinity, taints and
  resources are ignored;
* runs the containers of Pods bound to its node as local processes: init containers one after
  the other, then the main containers (side by side). `command` + `args` are run as given; the
  image is ignored (its default entrypoint cannot be known), so `command` is required. The
  process runs as the pod's `runAsUser`/`runAsGroup` with its `fsGroup` and
  `supplementalGroups`, and the capabilities its `securityContext` leaves it
  (`localcluster.podsecurity`), with a fresh environment: the agent's `PATH`, `HOME` (a
  per-pod directory), `HOSTNAME`,
  `KUBERNETES_SERVICE_HOST/PORT` (the real API server on 127.0.0.1), then the container's
  `envFrom` (secretRef/configMapRef) and `env` (`value` with `$(VAR)` expansion,
  `valueFrom.secretKeyRef`, `configMapKeyRef`, `fieldRef`). `$(VAR)` references in command and
  args are expanded like the kubelet does. Missing non-optional Secrets/ConfigMaps keep the Pod
  Pending (waiting `CreateContainerConfigError`) until they appear;
* maps volumes to local directories: `persistentVolumeClaim` -> `<root>/pvcs/<ns>/<claim>`
  (created when missing, whatever the PVC's phase; see `pvc_path`), `emptyDir` -> a per-pod
  directory, `secret`/`configMap`/`downwardAPI`/`projected` (including a bound
  `serviceAccountToken` from the TokenRequest API) -> files written into a per-pod directory,
  `hostPath` -> the host path itself. `subPath` is honoured; `readOnly` is not enforced.
  A PVC directory the agent creates is mode 0777, as the real node's provisioner makes them
  (so pods of any UID can write into a new volume); emptyDirs are 0777 and the termination
  message file 0666, as the kubelet makes them; `fsGroup` does not change a PVC's files (a
  hostPath volume's are not changed by a kubelet either), it only joins the process to it.

Path rewriting -- the process runs on the host, so container paths do not exist there. Every
mount path (and each container's `terminationMessagePath`, default `/dev/termination-log`, which
is mapped to a per-container file) is rewritten to its local directory wherever it appears as a
path in `command`, `args`, env values and `workingDir`: a value equal to the mount path, a value
starting with mount path + "/", and also an occurrence inside a longer string that starts a path
token there (preceded by start/whitespace/quote/`=`/`:`/`>`/`<`/`;`/`(`, followed by "/", the end
or a non-path character), so shell scripts like `sh -c "echo x > /out/f"` work. Paths a program
computes itself (or hard-codes, like /var/run/secrets/kubernetes.io/serviceaccount) are NOT
rewritten. A `workingDir` that does not exist after rewriting fails the container.

Status: the Pod goes Pending -> Running (containerStatuses running) -> Succeeded/Failed with
`state.terminated` (exitCode, reason Completed/Error, message = first 4096 bytes of the
termination message file, startedAt, finishedAt), so the real Job controller completes or fails
Jobs. `restartPolicy` is treated as `Never` (no restarts). `activeDeadlineSeconds` of the Pod is
enforced (reason DeadlineExceeded). When a Pod gets a deletionTimestamp (Job deleted, Job
activeDeadlineSeconds, ...), its processes get SIGTERM and SIGKILL after the grace period, and the
agent then deletes the Pod object with gracePeriodSeconds=0. `stop()` kills every process.

Logs of each container go to `<root>/pods/<ns>_<pod>_<uid>/logs/<container>.log`
(see `NodeAgent.container_log`). Run standalone:
`python -m localcluster.nodeagent --kubeconfig K --root DIR`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import logging
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from localcluster import podsecurity
from localcluster.kube import JSON, Kube, KubeError
from localcluster.process import ManagedProcess

log = logging.getLogger("localcluster.nodeagent")

NODE_NAME = "safehold-local-node"
NODE_IP = "127.0.0.1"
LEASE_DURATION = 40
MAX_TERMINATION_MESSAGE = 4096
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Waiting(Exception):
    """Something the pod needs (a Secret, a ConfigMap) does not exist yet."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _PodFailed(Exception):
    """The pod cannot run at all (unsupported volume, bad spec)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables are substituted, `$$` is a literal `$`."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(repl, value)


class PathMap:
    """Rewrites container paths (mount paths, termination message path) to host paths."""

    _BEFORE = r"(?:(?<=^)|(?<=[\s\"'=:><;(,|&`]))"
    _AFTER = r"(?=/|$|[^\w.\-])"

    def __init__(self, mapping: Mapping[str, Path]) -> None:
        # Longest container path first, so /data/sub wins over /data.
        self.mapping = {
            k.rstrip("/") or "/": v
            for k, v in sorted(mapping.items(), key=lambda kv: -len(kv[0]))
            if k.rstrip("/")
        }
        if self.mapping:
            alternatives = "|".join(re.escape(k) for k in self.mapping)
            self._pattern: re.Pattern[str] | None = re.compile(
                self._BEFORE + "(" + alternatives + ")" + self._AFTER
            )
        else:
            self._pattern = None

    def rewrite(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: str(self.mapping[m.group(1)]), value)


def _field_value(pod: JSON, field_path: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": NODE_IP,
        "status.podIP": NODE_IP,
        "status.hostIPs": NODE_IP,
        "status.podIPs": NODE_IP,
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if field_path == "status.phase":
        return str(status.get("phase", ""))
    raise _PodFailed("CreateContainerConfigError", f"unsupported fieldRef {field_path!r}")


class _Container:
    """One container of a pod run: its process and status bookkeeping."""

    def __init__(self, spec: JSON, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.process: ManagedProcess | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.message: str = ""
        self.waiting: tuple[str, str] | None = ("ContainerCreating", "")
        self.termination_file: Path | None = None

    def status(self) -> JSON:
        cid = f"localprocess://{self.process.pid}" if self.process and self.process.pid else ""
        st: JSON = {
            "name": self.name,
            "image": self.spec.get("image") or "localprocess",
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "started": False,
        }
        if cid:
            st["containerID"] = cid
        if self.exit_code is not None:
            term: JSON = {
                "exitCode": self.exit_code,
                "reason": self.reason or ("Completed" if self.exit_code == 0 else "Error"),
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
            }
            if self.message:
                term["message"] = self.message
            if cid:
                term["containerID"] = cid
            st["state"] = {"terminated": term}
        elif self.started_at is not None:
            st["state"] = {"running": {"startedAt": self.started_at}}
            st["ready"] = not self.init
            st["started"] = True
        else:
            reason, message = self.waiting or ("PodInitializing", "")
            waiting: JSON = {"reason": reason}
            if message:
                waiting["message"] = message
            st["state"] = {"waiting": waiting}
        return st


class PodRun:
    """Runs one pod's containers in a thread and reports their status."""

    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.pod_dir(self.namespace, self.name, self.uid)
        spec = pod["spec"]
        self.init_containers = [_Container(c, True) for c in spec.get("initContainers") or []]
        self.containers = [_Container(c, False) for c in spec.get("containers") or []]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self._start_mono = time.monotonic()
        self.conditions: dict[str, JSON] = {}
        self._terminate = threading.Event()
        self._grace = 30.0
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._main, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )
        self.path_map = PathMap({})
        self.volume_dirs: dict[str, Path] = {}

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self.thread.start()

    def terminate(self, grace: float) -> None:
        """Pod deletion: stop the processes (SIGTERM, SIGKILL after `grace`)."""
        with self._lock:
            if not self._terminate.is_set():
                self._grace = grace
                self._terminate.set()

    def update(self, pod: JSON) -> None:
        self.pod = pod

    # ------------------------------------------------------------------ main
    def _main(self) -> None:
        try:
            self._run()
        except _PodFailed as exc:
            self._finish("Failed", exc.reason, exc.message)
        except Exception as exc:
            log.exception("pod %s/%s: agent error", self.namespace, self.name)
            self._finish("Failed", "NodeAgentError", f"{type(exc).__name__}: {exc}")
        finally:
            self._kill_all(0.0)
            self.done.set()
            # Deleted pods are removed once their processes are gone; stopping the agent
            # only kills the processes (the pod objects stay, Failed).
            if self._terminate.is_set() and not self.agent.stopping:
                self.agent.delete_pod_object(self.namespace, self.name, self.uid)

    def _run(self) -> None:
        self._set_condition("PodReadyToStartContainers", False)
        self._set_condition(
            "Initialized", not self.init_containers, reason="ContainersNotInitialized"
        )
        self._set_condition("ContainersReady", False, reason="ContainersNotReady")
        self._set_condition("Ready", False, reason="ContainersNotReady")
        self._patch_status()
        self._wait_for(self._prepare_volumes)
        self._set_condition("PodReadyToStartContainers", True)
        for c in self.init_containers:
            c.waiting = ("PodInitializing", "")
        self._patch_status()

        for c in self.init_containers:
            if not self._run_containers([c]):
                return
        if self.init_containers:
            self._set_condition("Initialized", True)
        if self._run_containers(self.containers):
            codes = [c.exit_code for c in self.containers]
            if all(code == 0 for code in codes):
                self._finish("Succeeded", None, None)
            else:
                self._finish("Failed", None, None)

    def _wait_for(self, step: Callable[[], None], container: _Container | None = None) -> None:
        """Run `step`, retrying while it raises `_Waiting` (unless the pod goes away)."""
        delay = 0.2
        while True:
            try:
                step()
                return
            except _Waiting as exc:
                targets = [container] if container else self.init_containers + self.containers
                changed = False
                for c in targets:
                    if c.waiting != (exc.reason, exc.message):
                        c.waiting = (exc.reason, exc.message)
                        changed = True
                if changed:
                    self._patch_status()
                if self._deadline_exceeded():
                    raise _PodFailed("DeadlineExceeded", "Pod was active too long") from None
                if self._terminate.wait(delay):
                    raise _PodFailed("Terminated", "pod deleted before it started") from None
                delay = min(delay * 2, 2.0)

    def _deadline_exceeded(self) -> bool:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is None:
            return False
        return time.monotonic() - self._start_mono > float(deadline)

    def _run_containers(self, containers: list[_Container]) -> bool:
        """Start `containers` together and wait for all; False when the pod must stop here."""
        for c in containers:
            self._wait_for(functools.partial(self._start_container, c), c)
        if not containers[0].init:
            self._set_condition("ContainersReady", True)
            self._set_condition("Ready", True)
            self.phase = "Running"
        self._patch_status()
        deadline_reason: str | None = None
        while True:
            running = [c for c in containers if c.process and c.process.running()]
            if not running:
                break
            if self._terminate.wait(0.1):
                self._kill_all(self._grace)
                break
            if self._deadline_exceeded():
                deadline_reason = "DeadlineExceeded"
                self._kill_all(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                break
        for c in containers:
            self._collect(c)
        self._set_condition("ContainersReady", False, reason="PodCompleted")
        self._set_condition("Ready", False, reason="PodCompleted")
        if deadline_reason:
            self._finish(
                "Failed",
                deadline_reason,
                "Pod was active on the node longer than the specified deadline",
            )
            return False
        if self._terminate.is_set():
            if self.agent.stopping:
                self._finish("Failed", "NodeAgentStopped", "the node agent was stopped")
            else:
                self._finish("Failed", None, None)
            return False
        if containers[0].init and containers[0].exit_code != 0:
            self._finish("Failed", None, None)
            return False
        self._patch_status()
        return True

    # ------------------------------------------------------------------ volumes
    def _prepare_volumes(self) -> None:
        spec = self.pod["spec"]
        vol_root = self.dir / "volumes"
        volume_dirs: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            if "persistentVolumeClaim" in vol:
                path = self.agent.pvc_path(
                    self.namespace, vol["persistentVolumeClaim"]["claimName"]
                )
            elif "emptyDir" in vol:
                path = vol_root / name
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
            elif "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                if vol["hostPath"].get("type") in ("DirectoryOrCreate",):
                    path.mkdir(parents=True, exist_ok=True)
            elif any(k in vol for k in ("secret", "configMap", "downwardAPI", "projected")):
                path = vol_root / name
                files = self._volume_files(vol)
                self._write_files(path, files, vol, spec.get("securityContext") or {})
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise _PodFailed(
                    "UnsupportedVolume", f"volume {name!r}: {kinds} not supported by the node agent"
                )
            volume_dirs[name] = path
        self.volume_dirs = volume_dirs

    def _volume_files(self, vol: JSON) -> dict[str, tuple[bytes, int | None]]:
        files: dict[str, tuple[bytes, int | None]] = {}
        if "secret" in vol:
            src = vol["secret"]
            files.update(self._object_files("secrets", src.get("secretName", ""), src))
        elif "configMap" in vol:
            src = vol["configMap"]
            files.update(self._object_files("configmaps", src.get("name", ""), src))
        elif "downwardAPI" in vol:
            files.update(self._downward_files(vol["downwardAPI"].get("items") or []))
        elif "projected" in vol:
            for source in vol["projected"].get("sources") or []:
                if "secret" in source:
                    src = source["secret"]
                    files.update(self._object_files("secrets", src.get("name", ""), src))
                elif "configMap" in source:
                    src = source["configMap"]
                    files.update(self._object_files("configmaps", src.get("name", ""), src))
                elif "downwardAPI" in source:
                    files.update(self._downward_files(source["downwardAPI"].get("items") or []))
                elif "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    token = self._service_account_token(sat)
                    if token is not None:
                        files[sat["path"]] = (token.encode(), None)
        return files

    def _object_files(self, kind: str, name: str, src: JSON) -> dict[str, tuple[bytes, int | None]]:
        data = self.agent.read_data(kind, self.namespace, name)
        if data is None:
            if src.get("optional"):
                return {}
            raise _Waiting(
                "ContainerCreating",
                f"{'secret' if kind == 'secrets' else 'configmap'} {name!r} not found",
            )
        items = src.get("items")
        if not items:
            return {k: (v, None) for k, v in data.items()}
        files: dict[str, tuple[bytes, int | None]] = {}
        for item in items:
            if item["key"] not in data:
                if src.get("optional"):
                    continue
                raise _Waiting("ContainerCreating", f"{name!r} has no key {item['key']!r}")
            files[item["path"]] = (data[item["key"]], item.get("mode"))
        return files

    def _downward_files(self, items: Iterable[JSON]) -> dict[str, tuple[bytes, int | None]]:
        files: dict[str, tuple[bytes, int | None]] = {}
        for item in items:
            if "fieldRef" in item:
                value = _field_value(self.pod, item["fieldRef"]["fieldPath"])
            else:
                value = ""
            files[item["path"]] = (value.encode(), item.get("mode"))
        return files

    def _service_account_token(self, sat: JSON) -> str | None:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [sat["audience"]] if sat.get("audience") else [],
                "expirationSeconds": int(sat.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        try:
            result = self.agent.kube.post(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body
            )
        except KubeError as exc:
            log.warning("pod %s/%s: no service account token: %s", self.namespace, self.name, exc)
            return None
        return str(result.get("status", {}).get("token", ""))

    @staticmethod
    def _write_files(
        path: Path, files: Mapping[str, tuple[bytes, int | None]], vol: JSON, security: JSON
    ) -> None:
        """The files of a Secret, ConfigMap, ... volume; group-owned by the fsGroup, if any,
        as the kubelet makes them."""
        group = security.get("fsGroup")
        src = vol.get("secret") or vol.get("configMap") or vol.get("projected") or {}
        default_mode = src.get("defaultMode", vol.get("downwardAPI", {}).get("defaultMode", 0o644))
        path.mkdir(parents=True, exist_ok=True)
        for rel, (content, mode) in files.items():
            target = (path / rel).resolve()
            if not target.is_relative_to(path.resolve()):
                raise _PodFailed("InvalidVolume", f"volume path {rel!r} escapes the volume")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode if mode is not None else default_mode)
            if group is not None:
                os.chown(target, -1, int(group))

    # ------------------------------------------------------------------ containers
    def _path_map(self, c: _Container) -> PathMap:
        mapping: dict[str, Path] = {}
        for mount in c.spec.get("volumeMounts") or []:
            base = self.volume_dirs.get(mount["name"])
            if base is None:
                raise _PodFailed(
                    "CreateContainerConfigError", f"volumeMount {mount['name']!r}: no such volume"
                )
            sub = mount.get("subPath")
            if sub:
                base = base / sub
                base.mkdir(parents=True, exist_ok=True)
            mapping[mount["mountPath"]] = base
        tm_path = c.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        term_dir = self.dir / "termination"
        term_dir.mkdir(parents=True, exist_ok=True)
        c.termination_file = term_dir / c.name
        c.termination_file.write_bytes(b"")
        c.termination_file.chmod(0o666)  # writable by the container's user, as the kubelet's
        mapping[tm_path] = c.termination_file
        return PathMap(mapping)

    def _env(self, c: _Container, pmap: PathMap) -> dict[str, str]:
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env: dict[str, str] = {
            "PATH": self.agent.path,
            "HOME": str(home),
            "HOSTNAME": self.name,
            **self.agent.extra_env,
        }
        for src in c.spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if key not in src:
                    continue
                ref = src[key]
                data = self.agent.read_data(kind, self.namespace, ref.get("name", ""))
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise _Waiting(
                        "CreateContainerConfigError", f"{kind[:-1]} {ref.get('name')!r} not found"
                    )
                for k, v in data.items():
                    env[prefix + k] = pmap.rewrite(v.decode("utf-8", errors="replace"))
        for var in c.spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = pmap.rewrite(expand(var.get("value", ""), env))
                continue
            vf = var["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = _field_value(self.pod, vf["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind, ref = (
                    ("secrets", vf["secretKeyRef"])
                    if "secretKeyRef" in vf
                    else ("configmaps", vf["configMapKeyRef"])
                )
                data = self.agent.read_data(kind, self.namespace, ref.get("name", ""))
                raw = None if data is None else data.get(ref["key"])
                if raw is None:
                    if ref.get("optional"):
                        continue
                    raise _Waiting(
                        "CreateContainerConfigError",
                        f"{kind[:-1]} {ref.get('name')!r} key {ref['key']!r} not found",
                    )
                value = raw.decode("utf-8", errors="replace")
            elif "resourceFieldRef" in vf:
                res = vf["resourceFieldRef"]["resource"]
                group, _, rname = res.partition(".")
                value = str((c.spec.get("resources") or {}).get(group, {}).get(rname, "0"))
            else:
                raise _PodFailed("CreateContainerConfigError", f"env {name}: unsupported valueFrom")
            env[name] = pmap.rewrite(value)
        return env

    def _identity(self, c: _Container) -> list[str]:
        """The argv prefix that runs the container as its pod says; its home made its own."""
        try:
            identity = podsecurity.identity_of(self.pod["spec"], c.spec)
        except podsecurity.ConfigError as exc:
            raise _PodFailed("CreateContainerConfigError", str(exc)) from None
        podsecurity.chown_for(identity, [self.dir / "home"])
        return podsecurity.launcher(identity, self.agent.covers(), self.agent.root / "covers")

    def _start_container(self, c: _Container) -> None:
        pmap = self._path_map(c)
        env = self._env(c, pmap)
        prefix = self._identity(c)
        command = list(c.spec.get("command") or [])
        args = list(c.spec.get("args") or [])
        if not command:
            raise _PodFailed(
                "CreateContainerConfigError",
                f"container {c.name!r} has no command (images are not run by the node agent)",
            )
        argv = [pmap.rewrite(expand(a, env)) for a in command + args]
        cwd: Path | None = None
        if c.spec.get("workingDir"):
            cwd = Path(pmap.rewrite(c.spec["workingDir"]))
            if not cwd.is_dir():
                raise _PodFailed(
                    "CreateContainerError", f"workingDir {c.spec['workingDir']} ({cwd}) missing"
                )
        else:
            cwd = self.dir / "home"
        resolved = shutil.which(argv[0], path=env["PATH"]) if "/" not in argv[0] else argv[0]
        c.process = ManagedProcess(
            f"{self.namespace}/{self.name}/{c.name}",
            [*prefix, resolved or argv[0], *argv[1:]],
            self.dir / "logs" / f"{c.name}.log",
            env=env,
            cwd=cwd,
        )
        c.waiting = None
        c.started_at = now()
        try:
            c.process.start()
        except Exception as exc:
            c.exit_code = 128
            c.reason = "StartError"
            c.message = str(exc)[:MAX_TERMINATION_MESSAGE]
            c.finished_at = now()
            c.process = None

    def _collect(self, c: _Container) -> None:
        if c.exit_code is not None:
            return
        if c.process is None:
            c.exit_code, c.reason = 1, "ContainerCannotRun"
            c.finished_at = c.finished_at or now()
            return
        code = c.process.wait()
        c.exit_code = 128 - code if code < 0 else code  # killed by signal N -> 128 + N
        c.finished_at = now()
        if c.termination_file is not None and c.termination_file.exists():
            with c.termination_file.open("rb") as fh:
                c.message = fh.read(MAX_TERMINATION_MESSAGE).decode("utf-8", errors="replace")
        fallback = c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if not c.message and fallback and c.exit_code != 0:
            c.message = c.process.log_tail(80)[-MAX_TERMINATION_MESSAGE:]

    def _kill_all(self, grace: float) -> None:
        procs = [
            c.process
            for c in self.init_containers + self.containers
            if c.process is not None and c.process.running()
        ]
        for p in procs:
            p.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            remaining = max(0.0, deadline - time.monotonic())
            p.stop(grace=remaining)

    # ------------------------------------------------------------------ status
    def _set_condition(self, ctype: str, status: bool, reason: str | None = None) -> None:
        value = "True" if status else "False"
        old = self.conditions.get(ctype)
        if old and old["status"] == value:
            return
        cond: JSON = {
            "type": ctype,
            "status": value,
            "lastTransitionTime": now(),
            "lastProbeTime": None,
        }
        if reason and not status:
            cond["reason"] = reason
        self.conditions[ctype] = cond

    def _finish(self, phase: str, reason: str | None, message: str | None) -> None:
        self.phase = phase
        self.reason = reason
        self.message = message
        self._set_condition("ContainersReady", False, reason="PodCompleted")
        self._set_condition("Ready", False, reason="PodCompleted")
        self._patch_status()

    def status(self) -> JSON:
        st: JSON = {
            "phase": self.phase,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": self.start_time,
            "conditions": list(self.conditions.values()),
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            st["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        return st

    def _patch_status(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        body = {"metadata": {"uid": self.uid}, "status": self.status()}
        for attempt in range(5):
            try:
                self.agent.kube.patch(path, body)
                return
            except KubeError as exc:
                if exc.status == 404:
                    return
                log.warning("pod %s/%s: status patch failed: %s", self.namespace, self.name, exc)
                if exc.status in (400, 422):
                    return
            except Exception as exc:  # connection trouble: retry a little
                log.warning("pod %s/%s: status patch failed: %s", self.namespace, self.name, exc)
            time.sleep(0.2 * (attempt + 1))


class NodeAgent:
    """The node agent; `start()` registers the node and begins running pods, `stop()` ends all."""

    def __init__(
        self,
        kubeconfig: Path | str,
        root: Path | str,
        *,
        node_name: str = NODE_NAME,
        path: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        heartbeat_interval: float = 10.0,
        kubelet_version: str = "v0.0.0-localcluster",
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.root = Path(root)
        self.node_name = node_name
        self.path = path if path is not None else os.environ.get("PATH", os.defpath)
        self.extra_env = dict(extra_env or {})
        self.heartbeat_interval = heartbeat_interval
        self.kubelet_version = kubelet_version
        self.kube = Kube(self.kubeconfig)
        self._runs: dict[str, PodRun] = {}
        self._runs_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: Any = None
        self._watch_ready = threading.Event()
        self._binding: set[str] = set()
        self._deleting: set[str] = set()
        self._covers: dict[Path, list[str]] | None = None

    # ------------------------------------------------------------------ paths
    def pvc_path(self, namespace: str, claim: str) -> Path:
        """The local directory standing in for PVC `claim` in `namespace` (created if missing,
        mode 0777 like a new volume of the real node's provisioner)."""
        path = self.root / "pvcs" / namespace / claim
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
        return path

    def covers(self) -> dict[Path, list[str]]:
        """Directories processes of other users cannot search, and what of each they need
        (the toolchain, the agent's root): see localcluster.podsecurity."""
        with self._runs_lock:
            if self._covers is None:
                needed = podsecurity.needed_paths(self.path, [self.root])
                self._covers = podsecurity.covers(needed)
            return self._covers

    def pod_dir(self, namespace: str, name: str, uid: str) -> Path:
        path = self.root / "pods" / f"{namespace}_{name}_{uid[:8]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def container_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Output of a container of a pod this agent ran ('' when unknown)."""
        candidates = sorted((self.root / "pods").glob(f"{namespace}_{pod}_*/logs/*.log"))
        if container:
            candidates = [c for c in candidates if c.stem == container]
        return "".join(c.read_text(errors="replace") for c in candidates)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> NodeAgent:
        self.root.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._renew_lease()
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "pods")):
            t = threading.Thread(target=target, name=f"nodeagent-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if not self._watch_ready.wait(timeout):
            raise RuntimeError("node agent: pod watch did not start")
        return self

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        with self._runs_lock:
            runs = list(self._runs.values())
        for run in runs:
            run.terminate(grace)
        for run in runs:
            run.done.wait(grace + 5)
            run._kill_all(0.0)
        for t in self._threads:
            t.join(timeout=5)
        self.kube.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def pod_runs(self) -> dict[str, PodRun]:
        with self._runs_lock:
            return dict(self._runs)

    # ------------------------------------------------------------------ node
    def _node_status(self) -> JSON:
        ts = now()
        cpus = str(os.cpu_count() or 1)
        try:
            mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        except (ValueError, OSError):
            mem_kib = 4 * 1024 * 1024
        resources = {
            "cpu": cpus,
            "memory": f"{mem_kib}Ki",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": "safehold local node agent",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": self._node_started,
                }
                for t, s, r in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name)),
                "bootID": self._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "safehold local node agent",
                "containerRuntimeVersion": "localprocess://1",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    def _register_node(self) -> None:
        self._node_started = now()
        self._boot_id = str(uuid.uuid4())
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "safehold.io/local-node-agent": "true",
                },
            },
            "spec": {},
        }
        try:
            node = self.kube.post("/api/v1/nodes", body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            node = self.kube.get(f"/api/v1/nodes/{self.node_name}")
        self._node_uid = node["metadata"]["uid"]
        self.kube.patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION,
            "renewTime": now_micro(),
        }
        try:
            self.kube.patch(path, {"spec": spec}, content_type="application/merge-patch+json")
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.kube.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.node_name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.node_name,
                                "uid": self._node_uid,
                            }
                        ],
                    },
                    "spec": spec,
                },
            )

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.heartbeat_interval):
            try:
                self._renew_lease()
                self.kube.patch(
                    f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()}
                )
            except Exception as exc:
                if not self._stopping.is_set():
                    log.warning("node heartbeat failed: %s", exc)

    # ------------------------------------------------------------------ pods
    def _watch_loop(self) -> None:
        rv: str | None = None
        while not self._stopping.is_set():
            try:
                if rv is None:
                    listing = self.kube.get("/api/v1/pods")
                    rv = listing["metadata"]["resourceVersion"]
                    for pod in listing.get("items") or []:
                        self._handle("ADDED", pod)
                self._watch = self.kube.watch(
                    "/api/v1/pods",
                    resourceVersion=rv or "",
                    allowWatchBookmarks=True,
                    timeoutSeconds=300,
                )
                self._watch_ready.set()
                if self._stopping.is_set():
                    self._watch.close()
                for event in self._watch:
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            rv = None  # expired: list again
                        else:
                            log.warning("pod watch error: %s", obj.get("message"))
                            time.sleep(0.5)
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype == "BOOKMARK":
                        continue
                    self._handle(str(etype), obj)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("pod watch failed (%s); restarting", exc)
                rv = None
                time.sleep(0.5)

    def _handle(self, etype: str, pod: JSON) -> None:
        try:
            self._handle_event(etype, pod)
        except Exception:
            log.exception("node agent: handling %s pod event failed", etype)

    def _handle_event(self, etype: str, pod: JSON) -> None:
        meta = pod.get("metadata", {})
        spec = pod.get("spec", {})
        uid = meta.get("uid", "")
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if etype == "DELETED":
            with self._runs_lock:
                run = self._runs.pop(uid, None)
            self._binding.discard(uid)
            self._deleting.discard(uid)
            if run is not None:
                run.terminate(0.0)
                threading.Thread(target=self._cleanup, args=(run,), daemon=True).start()
            return
        node = spec.get("nodeName")
        if not node:
            if meta.get("deletionTimestamp") or uid in self._binding:
                return
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                return
            self._binding.add(uid)
            self._bind(namespace, name, uid)
            return
        if node != self.node_name:
            return
        with self._runs_lock:
            run = self._runs.get(uid)
        if meta.get("deletionTimestamp"):
            if run is not None and not run.done.is_set():
                grace = meta.get("deletionGracePeriodSeconds")
                run.terminate(float(grace if grace is not None else 30))
            elif uid not in self._deleting:
                self._deleting.add(uid)
                threading.Thread(
                    target=self.delete_pod_object, args=(namespace, name, uid), daemon=True
                ).start()
            return
        if run is not None:
            run.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase in ("Succeeded", "Failed") or self._stopping.is_set():
            return
        run = PodRun(self, pod)
        if phase == "Running":
            # Started by an earlier agent whose processes are gone: report that, do not rerun.
            run.phase = "Failed"
            run.reason = "NodeAgentRestarted"
            threading.Thread(target=run._patch_status, daemon=True).start()
            return
        with self._runs_lock:
            self._runs[uid] = run
        log.info("starting pod %s/%s", namespace, name)
        run.start()

    @staticmethod
    def _cleanup(run: PodRun) -> None:
        """After a pod is gone: drop its emptyDir and generated volume files (logs stay)."""
        run.done.wait(30)
        shutil.rmtree(run.dir / "volumes", ignore_errors=True)

    def _bind(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.kube.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("binding pod %s/%s failed: %s", namespace, name, exc)
                self._binding.discard(uid)

    def delete_pod_object(self, namespace: str, name: str, uid: str) -> None:
        """Remove the pod object now that its processes are gone (grace period 0)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.kube.delete(
                f"/api/v1/namespaces/{namespace}/pods/{name}", body, gracePeriodSeconds=0
            )
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod %s/%s failed: %s", namespace, name, exc)
        except Exception as exc:
            if not self._stopping.is_set():
                log.warning("deleting pod %s/%s failed: %s", namespace, name, exc)

    def read_data(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        """Data of a Secret or ConfigMap as bytes per key; None when it does not exist."""
        try:
            obj = self.kube.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        out: dict[str, bytes] = {}
        if kind == "secrets":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
            for k, v in (obj.get("stringData") or {}).items():
                out[k] = str(v).encode()
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = str(v).encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster.nodeagent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", required=True, help="directory for PVCs, pod dirs and logs")
    parser.add_argument("--node-name", default=NODE_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = NodeAgent(args.kubeconfig, args.root, node_name=args.node_name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    log.info("node agent %s running (root %s)", args.node_name, args.root)
    stop.wait()
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
