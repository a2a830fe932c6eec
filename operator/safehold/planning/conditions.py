"""Pure helpers for metav1.Condition lists and the phases derived from them."""

from __future__ import annotations

from datetime import datetime

from safehold.api.base import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return a new list with `type_` set; lastTransitionTime moves only when status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def changed(before: list[Condition], after: list[Condition], type_: str) -> bool:
    """Whether status or reason of `type_` differs: the moments worth an event."""
    old, new = get_condition(before, type_), get_condition(after, type_)
    if old is None or new is None:
        return old is not new
    return (old.status, old.reason) != (new.status, new.reason)
