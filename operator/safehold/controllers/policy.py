"""BackupPolicy: validation, scheduling, retention and RPO run in the operator-wide scheduling
loop (engine/scheduler.py); the handlers here only wake it, and delete the backups of a policy
whose deletionPolicy is Delete (engine/deletion.py).

Only policies with deletionPolicy Delete carry a finalizer (Kopf adds one for objects that
match a deletion handler's filter); the default Retain never blocks deleting a policy.
"""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import BACKUP, POLICY
from safehold.engine.deletion import DeletionBlocked, delete_policy_backups


def _wake(memo: kopf.Memo) -> None:
    scheduler = getattr(memo, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()


@kopf.on.event(GROUP, VERSION, POLICY.plural)
async def policy_event(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


@kopf.on.event(GROUP, VERSION, BACKUP.plural)
async def backup_event(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


def _deletes_data(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


@kopf.on.delete(GROUP, VERSION, POLICY.plural, when=_deletes_data)
def policy_deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    try:
        count = delete_policy_backups(memo.clients, namespace, name)
    except DeletionBlocked as err:
        raise kopf.TemporaryError(
            f"deletionPolicy Delete: waiting to delete backups: {err}", delay=30
        ) from None
    logger.info("deletionPolicy Delete: deleted %d backup(s) with their data", count)
