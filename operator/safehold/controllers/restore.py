"""RestoreRequest: queued once when created (or resumed unfinished after an operator
restart)."""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import RESTORE
from safehold.engine.restore import RestoreRun
from safehold.engine.runs import submit


@kopf.on.resume(GROUP, VERSION, RESTORE.plural)
@kopf.on.create(GROUP, VERSION, RESTORE.plural)
def restore_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    submit(memo.runs, memo.clients, memo.gateway, RestoreRun, dict(body), "restores")
