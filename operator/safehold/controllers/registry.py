"""Operator-wide start-up and clean-up; importing this module registers every handler."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from safehold import GROUP
from safehold.controllers import backup, location, policy, restore
from safehold.engine.scheduler import Scheduler
from safehold.kube.client import load_api_client
from safehold.kube.clients import Clients
from safehold.memory import release_loop

FINALIZER = f"operator.{GROUP}/finalizer"
HANDLER_MODULES = (backup, location, policy, restore)  # imported for their registrations


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Kopf's own "handler succeeded" events are noise for users; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    memo.clients = Clients.from_api_client(load_api_client())
    memo.stop_resync = asyncio.Event()
    memo.scheduler = Scheduler(memo.clients)
    memo.resync_task = asyncio.create_task(
        location.resync_loop(memo.clients, memo.stop_resync, memo.scheduler.wake)
    )
    memo.scheduler_task = asyncio.create_task(memo.scheduler.loop(memo.stop_resync))
    memo.release_task = asyncio.create_task(release_loop(memo.stop_resync))


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.stop_resync.set()
    await memo.resync_task
    await memo.scheduler_task
    await memo.release_task
