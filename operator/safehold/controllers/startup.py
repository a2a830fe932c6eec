"""Operator-wide start-up and clean-up: settings, shared clients, the background loops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from safehold import GROUP
from safehold.api.labels import FINALIZER
from safehold.controllers.memory import release_loop
from safehold.engine.gateway import Gateway
from safehold.engine.locations import LocationReconciler
from safehold.engine.queue import FairQueue
from safehold.engine.scheduler import Scheduler
from safehold.kube.clients import Clients, load_api_client


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
    memo.gateway = Gateway.for_operator(memo.clients).start(memo.gateway_address, memo.gateway_port)
    memo.runs = FairQueue().start()
    memo.stop = asyncio.Event()
    memo.scheduler = Scheduler(memo.clients)
    memo.locations = LocationReconciler(memo.clients, memo.scheduler.wake)
    memo.tasks = [
        asyncio.create_task(memo.locations.loop(memo.stop)),
        asyncio.create_task(memo.scheduler.loop(memo.stop)),
        asyncio.create_task(release_loop(memo.stop)),
    ]


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.stop.set()
    for task in memo.tasks:
        await task
    memo.runs.stop()
    memo.gateway.stop()
