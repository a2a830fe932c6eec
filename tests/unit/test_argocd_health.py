"""Argo CD health checks (argocd/resource_customizations/safehold.io/<Kind>/health.lua) run
in a real Lua runtime against their upstream-style health_test.yaml cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "argocd/resource_customizations/safehold.io"
KINDS = sorted(p.name for p in ROOT.iterdir() if p.is_dir())


def _cases() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for kind in KINDS:
        tests = yaml.safe_load((ROOT / kind / "health_test.yaml").read_text())["tests"]
        found += [(kind, case) for case in tests]
    return found


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = (ROOT / kind / "health.lua").read_text()
    fn = runtime.eval(f"function(obj)\n{script}\nend")
    result = fn(_to_lua(runtime, obj))
    return dict(result.items())


def test_every_kind_has_a_health_check() -> None:
    assert KINDS == ["Backup", "BackupPolicy", "BackupStorageLocation", "RestoreRequest"]


@pytest.mark.parametrize(
    ("kind", "case"), _cases(), ids=[f"{k}-{c['inputPath']}" for k, c in _cases()]
)
def test_health(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ROOT / kind / case["inputPath"]).read_text())
    assert health(kind, obj) == case["healthStatus"]
