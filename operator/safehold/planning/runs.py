"""Status of one-shot runs (Backup, RestoreRequest): conditions and the phase derived from them.

Succeeded is Unknown while running and True/False at the end; Complete turns True at the end
either way, so `kubectl wait --for=condition=Complete` never hangs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from safehold.api.base import Condition
from safehold.planning.conditions import get_condition, set_condition

Phase = Literal["New", "Running", "Succeeded", "PartiallyFailed", "Failed"]
Outcome = Literal["Succeeded", "PartiallyFailed", "Failed"]
TERMINAL: frozenset[str] = frozenset({"Succeeded", "PartiallyFailed", "Failed"})


def phase_of(conditions: list[Condition]) -> Phase:
    succeeded = get_condition(conditions, "Succeeded")
    if succeeded is None:
        return "New"
    if succeeded.status == "Unknown":
        return "New" if succeeded.reason == "Queued" else "Running"
    if succeeded.status == "True":
        return "Succeeded"
    return "PartiallyFailed" if succeeded.reason == "PartiallyFailed" else "Failed"


def queued(
    conditions: list[Condition], message: str, generation: int | None, now: datetime
) -> list[Condition]:
    """Waiting for a free run slot (phase New)."""
    out = set_condition(conditions, "Succeeded", "Unknown", "Queued", message, generation, now)
    return set_condition(out, "Complete", "False", "Queued", message, generation, now)


def running(
    conditions: list[Condition], message: str, generation: int | None, now: datetime
) -> list[Condition]:
    out = set_condition(conditions, "Succeeded", "Unknown", "Running", message, generation, now)
    return set_condition(out, "Complete", "False", "Running", message, generation, now)


def finished(
    conditions: list[Condition],
    outcome: Outcome,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Final conditions. For PartiallyFailed the Succeeded reason is always PartiallyFailed,
    which is how the phase is derived back."""
    status: Literal["True", "False"] = "True" if outcome == "Succeeded" else "False"
    reason = "PartiallyFailed" if outcome == "PartiallyFailed" else reason
    out = set_condition(conditions, "Succeeded", status, reason, message, generation, now)
    return set_condition(out, "Complete", "True", outcome, message, generation, now)
