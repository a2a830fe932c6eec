"""Small readers of object metadata shared by the planners."""

from __future__ import annotations

from datetime import datetime

from safehold.api.base import JSON
from safehold.api.labels import LABEL_POLICY


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def policy_of(obj: JSON) -> str | None:
    """The policy a Backup or BackupVerification belongs to: its policy label, else its
    policyRef."""
    labelled = (obj["metadata"].get("labels") or {}).get(LABEL_POLICY)
    ref = ((obj.get("spec") or {}).get("policyRef") or {}).get("name")
    return labelled or ref or None
