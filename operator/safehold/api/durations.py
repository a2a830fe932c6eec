"""Go-style durations ("90s", "1h30m") as used in specs, and their bounds.

Every duration field is bounded twice: in the CRD schema (a pattern that cannot overflow and a
CEL rule with the field's range, so the API server refuses a bad value at admission) and in
the model (so the operator refuses, with a reason, what an older schema let through).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic.config import JsonDict

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# At most four parts of at most five digits: never more than Go's largest duration (292
# years), so the API server's CEL duration() can always parse it.
PATTERN = r"^([0-9]{1,5}(\.[0-9]{1,6})?(ms|s|m|h)){1,4}$"


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m" into a timedelta; ValueError on anything else."""
    parts = _PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 26h, 1h30m)")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def duration_field(minimum: str, maximum: str) -> Any:
    """The schema of a duration from `minimum` to `maximum`: a pattern that cannot overflow
    and a CEL rule the API server checks at admission."""
    rule: JsonDict = {
        "rule": (
            f"duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}')"
        ),
        "message": f"must be a duration from {minimum} to {maximum}",
        "reason": "FieldValueInvalid",
    }
    return Field(
        pattern=PATTERN, max_length=40, json_schema_extra={"x-kubernetes-validations": [rule]}
    )


def duration_check(minimum: str, maximum: str) -> Any:
    """The same bounds, checked by the model (what an older schema let through)."""
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"{value} is outside {minimum} to {maximum}")
        return value

    return AfterValidator(check)


# The duration fields of the API, each with its range.
SyncPeriod = Annotated[str, duration_field("10s", "24h"), duration_check("10s", "24h")]
SnapshotTimeout = Annotated[str, duration_field("1s", "24h"), duration_check("1s", "24h")]
MoverTimeout = Annotated[str, duration_field("1m", "168h"), duration_check("1m", "168h")]
ReadyTimeout = Annotated[str, duration_field("0s", "24h"), duration_check("0s", "24h")]
GracePeriod = Annotated[str, duration_field("0s", "8784h"), duration_check("0s", "8784h")]
RpoTarget = Annotated[str, duration_field("1s", "8784h"), duration_check("1s", "8784h")]
TimeToLive = Annotated[str, duration_field("1m", "87840h"), duration_check("1m", "87840h")]
DrillTimeout = Annotated[str, duration_field("1m", "24h"), duration_check("1m", "24h")]
KeepDuration = Annotated[str, duration_field("1m", "720h"), duration_check("1m", "720h")]
RtoTarget = Annotated[str, duration_field("1s", "8784h"), duration_check("1s", "8784h")]
RepositoryCheckInterval = Annotated[
    str, duration_field("10s", "8784h"), duration_check("10s", "8784h")
]
