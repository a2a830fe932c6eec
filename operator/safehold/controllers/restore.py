"""RestoreRequest: run once when created (or resumed unfinished after an operator restart)."""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import RESTORE
from safehold.engine.restore import run_restore


@kopf.on.resume(GROUP, VERSION, RESTORE.plural)
@kopf.on.create(GROUP, VERSION, RESTORE.plural)
def restore_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    run_restore(memo.clients, memo.gateway, dict(body))
