"""Shared test configuration.

`make test` runs the tiers on parallel workers (pytest-xdist, `--dist loadgroup`): every test
module is one group, so a module's fixtures are made once, on one worker; the real-node tier
is one group across its modules, because the machine runs one real node at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_NODE_TIER = REPO / "tests" / "node"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        group = "real-node" if _NODE_TIER in path.parents else str(path.relative_to(REPO))
        item.add_marker(pytest.mark.xdist_group(group))
