"""Process-wide settings of the operator, from its environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FIELD_MANAGER = "safehold"
LABEL_POLICY = "safehold.io/policy"
LABEL_RESTORED_BY = "safehold.io/restored-by"
ANNOTATION_SYNCED = "safehold.io/synced-from-storage"
# Any new value on a BackupPolicy starts one run.
ANNOTATION_TRIGGER = "safehold.io/trigger"
# "true" on a Backup deletes it and its data (same path as retention).
ANNOTATION_DELETE_REQUESTED = "safehold.io/delete-requested"
# On Backups made by a policy: the scheduled time (UTC) or the trigger value behind the run.
ANNOTATION_SCHEDULED_TIME = "safehold.io/scheduled-time"
ANNOTATION_TRIGGERED_BY = "safehold.io/triggered-by"


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
