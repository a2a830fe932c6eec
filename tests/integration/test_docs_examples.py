"""Every YAML example in README.md and docs/ is accepted by the real API server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from localcluster.cluster import LocalCluster
from localcluster.helpers import kubectl

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for index, block in enumerate(FENCE.findall(path.read_text())):
            docs = [d for d in yaml.safe_load_all(block) if d]
            if any(isinstance(d, dict) and "apiVersion" in d for d in docs):
                found.append((f"{path.relative_to(REPO)}#{index}", block))
    return found


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_doc_example_is_accepted(
    local_cluster: LocalCluster, namespace: str, where: str, block: str
) -> None:
    result = kubectl(local_cluster, "apply", "-n", namespace, "-f", "-", stdin=block, check=False)
    assert result.returncode == 0, f"{where}: {result.stderr}"
