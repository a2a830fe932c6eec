"""Directory trees that are hard to copy faithfully, and an exact description to compare them.

make_tree() writes many small files, a large file, sparse files, binary data, relative and
dangling symlinks, empty directories, names with spaces, unicode and a newline, varied
permissions and timestamps, all owned by one user (`owner`); with `other_owners`, files of
several users as well, with modes 0600 and 0000, a private directory and a setgid file (a
mover running as one user cannot read them). describe() returns everything restic must
preserve below the root, describe_root() the root directory itself, allocated() the bytes a
file takes on disk.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

MTIME = 1_700_000_000  # fixed timestamps, so a restore that drops them is noticed
ROOT_MTIME = 1_600_000_000
ROOT_MODE = 0o751
SPARSE_IMAGE = "disk.img"  # apparent size `disk_mib`, three 4 KiB data blocks


def _other_owners(root: Path) -> None:
    """Files a mover of one UID cannot read: other users' 0600 and 0000 files, a 0700
    directory, a root-only key; and a setgid file of a group the owner is not in."""
    mine = root / "owned-by-1000.txt"
    mine.write_text("only for 1000\n")
    os.chown(mine, 1000, 1000)
    mine.chmod(0o600)
    private = root / "home-2000"
    private.mkdir(exist_ok=True)
    sealed = private / "sealed"
    sealed.write_text("nobody may read this, not even 2000\n")
    os.chown(sealed, 2000, 3000)
    sealed.chmod(0o000)
    os.chown(private, 2000, 2000)
    private.chmod(0o700)
    key = root / "root-only.key"
    key.write_text("root's\n")
    os.chown(key, 0, 0)
    key.chmod(0o600)
    tool = root / "setgid-tool"
    tool.write_text("#!/bin/sh\n")
    os.chown(tool, 1000, 4000)
    tool.chmod(0o2750)


def _sparse_image(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for offset in (0, (mib << 19), (mib << 20) - 4096):  # start, middle, end
            out.seek(offset)
            out.write(os.urandom(4096))


def make_tree(
    root: Path,
    small_files: int = 300,
    large_mib: int = 8,
    seed: int = 7,
    *,
    owner: tuple[int, int] = (0, 0),
    other_owners: bool = False,
    disk_mib: int = 0,
) -> None:
    rnd = hashlib.sha256(str(seed).encode()).digest()
    root.mkdir(parents=True, exist_ok=True)
    small = root / "many small"
    small.mkdir(exist_ok=True)
    for i in range(small_files):
        (small / f"file-{i:04d}.txt").write_text(f"small file {i} {rnd.hex()}\n" * (i % 7 + 1))
    # Incompressible and without repetition, so content-defined chunking finds its usual
    # ~1 MiB boundaries (repetitive data makes maximal 8 MiB chunks).
    generator = random.Random(seed)  # noqa: S311 - test data, not cryptography
    with (root / "large.bin").open("wb") as out:
        for _ in range(large_mib):
            out.write(generator.randbytes(1 << 20))
    with (root / "sparse.img").open("wb") as out:  # 4 KiB allocated of 64 MiB
        out.seek(64 * 1024 * 1024)
        out.write(b"end of a sparse file\n")
    if disk_mib:
        _sparse_image(root / SPARSE_IMAGE, disk_mib)
    (root / "binary.dat").write_bytes(bytes(range(256)) * 64 + b"\x00\xff" * 100)
    (root / "unicode-ñämé-文件.txt").write_text("grüß dich 🌍\n")
    (root / "with space.txt").write_text("spaces\n")
    (root / "new\nline.txt").write_text("a newline in the name\n")
    (root / "empty-dir" / "nested-empty").mkdir(parents=True, exist_ok=True)
    (root / "link-to-large").symlink_to("large.bin")
    (root / "dangling-link").symlink_to("does/not/exist")
    private = root / "private.key"
    private.write_text("not really a key\n")
    private.chmod(0o600)
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    readonly = root / "readonly-dir"
    readonly.mkdir(exist_ok=True)
    (readonly / "inside.txt").write_text("inside\n")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, *owner)
    if other_owners:
        _other_owners(root)
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_symlink():
            os.utime(path, (MTIME, MTIME))
    readonly.chmod(0o555)
    root.chmod(ROOT_MODE)
    os.utime(root, (ROOT_MTIME, ROOT_MTIME))


def describe_root(root: Path) -> tuple[str, int, int, int]:
    """Mode, owner, group and mtime of the root directory itself."""
    st = root.stat()
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, int(st.st_mtime)


def allocated(path: Path) -> int:
    """Bytes the file takes on disk (its blocks), not its apparent size."""
    return path.stat().st_blocks * 512


def describe(root: Path) -> dict[str, Any]:
    """Relative path -> (type, mode, uid, gid, mtime, content hash or link target)."""
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", oct(mode), st.st_uid, st.st_gid)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", oct(mode), st.st_uid, st.st_gid, int(st.st_mtime), digest)
    return found


def change_fraction(root: Path, fraction: float = 0.01) -> int:
    """Rewrite about `fraction` of the large file's bytes in place; returns bytes changed."""
    large = root / "large.bin"
    size = large.stat().st_size
    changed = int(size * fraction)
    with large.open("r+b") as out:
        out.seek(size // 3)
        out.write(os.urandom(changed))
    return changed
