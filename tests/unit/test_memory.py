"""The operator's malloc settings, in fresh interpreters (glibc only)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

OPERATOR_SRC = str(Path(__file__).resolve().parents[2] / "operator")

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the settings apply to glibc only"
)


def run_python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=base | {"PYTHONPATH": OPERATOR_SRC} | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_arena_limit_is_set_unless_the_environment_sets_one() -> None:
    code = (
        "from safehold.controllers.memory import limit_malloc_arenas; print(limit_malloc_arenas())"
    )
    assert run_python(code) == "True"
    assert run_python(code, MALLOC_ARENA_MAX="4") == "False"


def test_free_memory_goes_back_to_the_kernel() -> None:
    code = """
from safehold.controllers.memory import release_free_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

blocks = [bytearray(2000) for _ in range(60000)]  # ~120 MiB of malloc'd blocks
kept = blocks[::64]  # a few survivors pin the heap, as live objects do in the operator
del blocks
before = rss()
release_free_memory()
print(before, rss(), len(kept))
"""
    before, after, _ = (float(x) for x in run_python(code).split())
    assert before > 100, before
    assert after < before - 80, (before, after)
