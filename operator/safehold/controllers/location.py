"""BackupStorageLocation: probe on create, resume and spec change (engine/locations.py)."""

from __future__ import annotations

from typing import Any

import kopf

from safehold import GROUP, VERSION
from safehold.api.kinds import LOCATION


@kopf.on.resume(GROUP, VERSION, LOCATION.plural)
@kopf.on.create(GROUP, VERSION, LOCATION.plural)
@kopf.on.update(GROUP, VERSION, LOCATION.plural, field="spec")
def location_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.locations.reconcile(dict(body))
