"""TEST-ONLY: the user, groups and capabilities a container of the node agent runs with.

The node agent runs as root and runs containers as local processes; like a kubelet with
containerd and runc it gives each the identity its pod asks for, so a process of a pod with
`runAsUser: 65532` can read only what UID 65532 may read:

* UID: the container's `runAsUser`, else the pod's; without one the process runs as the
  agent's own user (the image's `USER` cannot be known). `runAsNonRoot` with UID 0 refuses to
  start the container, as the kubelet does.
* GID: `runAsGroup` (container, then pod), else 0 (what containerd uses for a UID the image does
  not know); supplementary groups: the pod's `fsGroup` and `supplementalGroups`.
* capabilities: containerd's default set, minus `drop`, plus `add` (`ALL` in either), as the
  bounding set; for UID 0 they are then its capabilities, a non-root UID has none (no ambient
  capabilities, as containerd 1.6). `allowPrivilegeEscalation: false` sets no_new_privs.
* Processes of another UID cannot enter directories that only root may search, such as a
  0700 /root holding the Python and the pinned tools, or the agent's 0700 work directory. For
  them the process starts in a private mount namespace (`unshare --mount`) where each such
  directory is covered by one that holds only what the process needs (the toolchain, the
  agent's root), each a bind mount of the original. Nothing changes on the host.

Not emulated: seccomp, user namespaces, `readOnlyRootFilesystem`, the image's /etc/passwd.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

# containerd's default capabilities of a container (pkg/cap, oci.defaultUnixCaps).
DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip


class ConfigError(ValueError):
    """The container cannot run as asked (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class Identity:
    """Who a container's process is."""

    uid: int | None  # None: the agent's own user
    gid: int | None
    groups: tuple[int, ...]
    capabilities: frozenset[str] | None  # bounding set; None: unrestricted (`add: [ALL]`)
    no_new_privs: bool


def _capabilities(security: JSON) -> frozenset[str] | None:
    caps = security.get("capabilities") or {}
    drop = {str(c).upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {str(c).upper().removeprefix("CAP_") for c in caps.get("add") or []}
    if "ALL" in add:
        return None
    kept = set() if "ALL" in drop else DEFAULT_CAPABILITIES - drop
    return frozenset(kept | add)


def identity_of(pod_spec: JSON, container: JSON) -> Identity:
    """The identity the kubelet would give `container` of a pod with `pod_spec`."""
    psc = pod_spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}

    def field(name: str) -> Any:
        return csc.get(name, psc.get(name))

    uid, gid = field("runAsUser"), field("runAsGroup")
    if field("runAsNonRoot") and uid == 0:
        raise ConfigError("container's runAsUser breaks non-root policy")
    groups = [
        g for g in [psc.get("fsGroup"), *(psc.get("supplementalGroups") or [])] if g is not None
    ]
    return Identity(
        uid=None if uid is None else int(uid),
        gid=int(gid) if gid is not None else (0 if uid is not None else None),
        groups=tuple(dict.fromkeys(int(g) for g in groups)),
        capabilities=_capabilities(csc),
        no_new_privs=csc.get("allowPrivilegeEscalation") is False,
    )


def _searchable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return True  # missing: nothing to cover


def _blocked(target: Path) -> tuple[Path, str] | None:
    """The first ancestor of `target` other users cannot search, and its child on the way."""
    parts = target.resolve().parts
    for depth in range(1, len(parts) - 1):
        ancestor = Path(*parts[: depth + 1])
        if not _searchable_by_others(ancestor):
            return ancestor, parts[depth + 1]
    return None


def needed_paths(path_env: str, extra: Iterable[Path] = ()) -> list[Path]:
    """What a process of another user must reach: the PATH's directories and the targets of
    their symbolic links (the pinned tools), the running Python, and `extra`."""
    found = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve(), *extra]
    for entry in (Path(p) for p in path_env.split(os.pathsep) if p):
        found.append(entry)
        if not entry.is_dir() or not _blocked_or_links_out(entry):
            continue
        found += [p.resolve() for p in entry.iterdir() if p.is_symlink()]
    return found


def _blocked_or_links_out(directory: Path) -> bool:
    """Worth looking into: a directory outside the system ones (a venv, the tools)."""
    return not str(directory).startswith(("/usr/", "/bin", "/sbin"))


def covers(paths: Iterable[Path]) -> dict[Path, list[str]]:
    """Each directory other users cannot search → the children of it they must reach."""
    found: dict[Path, list[str]] = {}
    for path in paths:
        hit = _blocked(path)
        if hit is not None and hit[1] not in found.setdefault(hit[0], []):
            found[hit[0]].append(hit[1])
    return dict(sorted(found.items(), key=lambda kv: len(kv[0].parts)))


_COVER = """set -e
stage="$1"; shift
while [ "$1" != "--" ]; do
  dir="$1"; shift; n="$1"; shift
  cover="$stage/$n"; mkdir -p "$cover"; chmod 0755 "$cover"
  while [ "$1" != ";" ]; do
    mkdir -p "$cover/$1"; mount --bind "$dir/$1" "$cover/$1"; shift
  done
  shift
  mount --rbind "$cover" "$dir"
done
shift
exec "$@"
"""


def launcher(identity: Identity, cover: dict[Path, list[str]], stage: Path) -> list[str]:
    """The argv prefix that starts a command as `identity` (the command follows it)."""
    setpriv = ["setpriv"]
    if identity.uid is not None:
        setpriv += ["--reuid", str(identity.uid)]
    if identity.gid is not None:
        setpriv += ["--regid", str(identity.gid)]
        groups = ",".join(str(g) for g in identity.groups)
        setpriv += ["--groups", groups] if groups else ["--clear-groups"]
    if identity.capabilities is not None:
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(identity.capabilities))])
        setpriv += ["--bounding-set", bounding, "--inh-caps", "-all"]
    if identity.no_new_privs:
        setpriv.append("--no-new-privs")
    setpriv += ["--pdeathsig", "KILL", "--"]
    if not identity.uid or not cover:
        return setpriv
    args: list[str] = []
    for n, (directory, children) in enumerate(cover.items()):
        args += [str(directory), str(n), *children, ";"]
    stage.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--mount", "--", "sh", "-c", _COVER, "cover", str(stage), *args, "--",
            *setpriv]  # fmt: skip


def chown_for(identity: Identity, paths: Sequence[Path]) -> None:
    """Hand the container's own files (its home) to its user, as an image's would be."""
    if identity.uid is None:
        return
    for path in paths:
        os.chown(path, identity.uid, identity.gid or 0)
