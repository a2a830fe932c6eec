"""The real node, shared by the node tier's modules: one control plane and one kubelet per run.

Root only. `SAFEHOLD_REAL_NODE=0` skips the tier; `SAFEHOLD_REAL_NODE=1` turns every skip
(missing root, node tools, image archives or helm) into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcluster.cluster import LocalCluster
from localcluster.node import RealNode
from node.tier import ARCHIVE, node_skip_reason


@pytest.fixture(scope="session")
def real_node() -> Iterator[RealNode]:
    reason = node_skip_reason()
    if reason is not None:
        pytest.fail(f"SAFEHOLD_REAL_NODE=1 but the real node cannot run: {reason}")
    keep = os.environ.get("SAFEHOLD_KEEP_WORKDIR") == "1"  # component logs, for debugging
    with LocalCluster(node_agent=False, keep_workdir=keep) as cluster, RealNode(cluster) as node:
        node.import_image(ARCHIVE)
        yield node
