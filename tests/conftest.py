"""Shared test configuration.

`make test` runs the tiers on parallel workers (pytest-xdist, `-n`): every test module goes
to one worker whole, so a module's fixtures are made once; the real-node tier is one unit
across its modules (the machine runs one real node at a time) and starts first, being the
longest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_TIER = "tests/node/"


def _unit(nodeid: str) -> str:
    """What runs on one worker: the real-node tier, or one module."""
    path = nodeid.split("::", 1)[0]
    return NODE_TIER if path.startswith(NODE_TIER) else path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable sort: the real-node tier first, everything else in collection order.
    items.sort(key=lambda item: _unit(item.nodeid) != NODE_TIER)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByModule(config, log)
