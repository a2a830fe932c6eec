"""Directory trees that are hard to copy faithfully, and an exact description to compare them.

make_tree() writes many small files, a large file, a sparse file, binary data, relative and
dangling symlinks, empty directories, names with spaces, unicode and a newline, varied
permissions, owners and timestamps. describe() returns everything restic must preserve.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

MTIME = 1_700_000_000  # fixed timestamps, so a restore that drops them is noticed


def make_tree(root: Path, small_files: int = 300, large_mib: int = 8, seed: int = 7) -> None:
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
    with (root / "sparse.img").open("wb") as out:
        out.seek(64 * 1024 * 1024)
        out.write(b"end of a sparse file\n")
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
    owned = root / "owned-by-1000.txt"
    owned.write_text("owned\n")
    os.chown(owned, 1000, 1000)
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_symlink():
            os.utime(path, (MTIME, MTIME))
    readonly.chmod(0o555)


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
