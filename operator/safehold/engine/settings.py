"""Process-wide settings of the operator, from its environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def operator_namespace() -> str:
    """The namespace whose resources may act on other namespaces and cluster-scoped objects."""
    return (
        os.environ.get("SAFEHOLD_OPERATOR_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or "safehold-system"
    )


def scratch_dir() -> Path:
    """Working space for exports and restores (an emptyDir in the operator pod)."""
    base = os.environ.get("SAFEHOLD_SCRATCH_DIR") or str(Path(tempfile.gettempdir()) / "safehold")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def restic_cache_dir() -> str:
    """restic's cache for the operator's own repository commands."""
    return str(scratch_dir() / "restic-cache")
