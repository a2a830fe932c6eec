"""Pure decisions about BackupStorageLocations: when to probe, what status to write."""

from __future__ import annotations

from datetime import datetime, timedelta

from safehold.api.base import JSON
from safehold.api.durations import parse_duration
from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.planning.conditions import get_condition, set_condition

# A location that is not Ready is re-probed at least this often, so a Secret or bucket
# created after the location is noticed quickly.
FAILING_REPROBE = timedelta(seconds=30)


def probe_due(
    spec: BackupStorageLocationSpec,
    status: BackupStorageLocationStatus,
    generation: int | None,
    now: datetime,
) -> bool:
    """Whether the location should be probed now."""
    if status.last_probe_time is None or status.observed_generation != generation:
        return True
    ready = get_condition(status.conditions, "Ready")
    period = parse_duration(spec.sync_period)
    if ready is None or ready.status != "True":
        period = min(period, FAILING_REPROBE)
    return now - status.last_probe_time >= period


# Said on a location (True, or absent) whose repository opens only with the repository
# password followed by a newline, as Secrets made with `--from-file` held it before Safehold
# stripped one trailing newline from the password.
NEWLINE_CONDITION = "RepositoryPasswordNewline"
NEWLINE_REASON = "PasswordNeedsNewline"
NEWLINE_MESSAGE = (
    "the repository opens only with the repository password followed by a newline (it was "
    "created with a Secret that ended in one), so Safehold uses it that way; to open the "
    "repository by hand, end the password with a newline, e.g. RESTIC_PASSWORD=$'...\\n'"
)


def password_with_newline(body: JSON | None) -> bool:
    """Whether the location's last successful probe opened the repository only with the
    password followed by a newline: every run then uses it so."""
    status = BackupStorageLocationStatus.model_validate((body or {}).get("status") or {})
    found = get_condition(status.conditions, NEWLINE_CONDITION)
    return found is not None and found.status == "True"


def status_after_probe(
    status: BackupStorageLocationStatus,
    ok: bool,
    reason: str,
    message: str,
    repository_initialized: bool | None,
    generation: int | None,
    now: datetime,
    with_newline: bool = False,
) -> BackupStorageLocationStatus:
    """The status to write after a probe. The newline condition follows a probe that opened
    the repository; a failed probe leaves it as it was."""
    conditions = set_condition(
        status.conditions, "Ready", "True" if ok else "False", reason, message, generation, now
    )
    if ok and with_newline:
        conditions = set_condition(
            conditions,
            NEWLINE_CONDITION,
            "True",
            NEWLINE_REASON,
            NEWLINE_MESSAGE,
            generation,
            now,
        )
    elif ok:
        conditions = [c for c in conditions if c.type != NEWLINE_CONDITION]
    return status.model_copy(
        update={
            "conditions": conditions,
            "observed_generation": generation,
            "last_probe_time": now,
            "repository_initialized": repository_initialized,
        }
    )


def location_problem(body: JSON | None) -> tuple[str, str] | None:
    """Why a location (its object body, or None when it does not exist) cannot be used now:
    (reason, message), or None when it is Ready. The one answer to "is the location Ready"."""
    if body is None:
        return ("LocationNotFound", "does not exist")
    status = BackupStorageLocationStatus.model_validate(body.get("status") or {})
    ready = get_condition(status.conditions, "Ready")
    if ready is None or ready.status != "True":
        why = f"{ready.reason}: {ready.message}" if ready else "not probed yet"
        return ("LocationNotReady", f"is not Ready ({why})")
    return None
