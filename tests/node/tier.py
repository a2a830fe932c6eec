"""Whether the node tier can run here, shared by its modules and its conftest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localcluster.node import unavailable_reason

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "build" / "image" / "safehold-oci.tar"
PG_ARCHIVE = REPO / "build" / "image" / "postgres-oci.tar"
SEAWEEDFS_ARCHIVE = REPO / "build" / "image" / "seaweedfs-oci.tar"
REQUESTED = os.environ.get("SAFEHOLD_REAL_NODE", "")


def node_skip_reason() -> str | None:
    """Why the node tier cannot run here, or None."""
    if REQUESTED == "0":
        return "real-node tier turned off (SAFEHOLD_REAL_NODE=0)"
    reason = unavailable_reason()
    if reason:
        return reason
    if not ARCHIVE.is_file():
        return f"{ARCHIVE} missing: run `make image-save`"
    return None


def skip_unless_runnable(reason: str | None) -> pytest.MarkDecorator:
    """Skip with `reason` unless SAFEHOLD_REAL_NODE=1 asked for the tier (then fixtures fail)."""
    return pytest.mark.skipif(reason is not None and REQUESTED != "1", reason=reason or "")
