"""BackupVerification: queued once when created (or resumed unfinished after an operator
restart, when the drill starts over)."""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import VERIFICATION
from safehold.engine.drill import DrillRun
from safehold.engine.runs import submit


@kopf.on.resume(GROUP, VERSION, VERIFICATION.plural)
@kopf.on.create(GROUP, VERSION, VERIFICATION.plural)
def verification_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    submit(memo.runs, memo.clients, memo.gateway, DrillRun, dict(body), "drills")
