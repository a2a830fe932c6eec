"""Backup: queued once when created (or resumed unfinished after an operator restart)."""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import BACKUP
from safehold.api.labels import ANNOTATION_SYNCED
from safehold.engine.backup import BackupRun
from safehold.engine.runs import submit
from safehold.planning.meta import policy_of


@kopf.on.resume(GROUP, VERSION, BACKUP.plural)
@kopf.on.create(GROUP, VERSION, BACKUP.plural)
def backup_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Backups re-created from the catalog already happened; their status comes from storage.
    if ANNOTATION_SYNCED in (body.metadata.annotations or {}):
        return
    obj = dict(body)
    submit(memo.runs, memo.clients, memo.gateway, BackupRun, obj, policy_of(obj) or "")
