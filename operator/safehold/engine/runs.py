"""The life of a one-shot run (Backup, RestoreRequest, BackupVerification): status writes,
the final conditions, the Event, and the rule that an unexpected error ends the run instead
of leaving it Running."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import ValidationError

from safehold.api.backup import BackupStatus
from safehold.api.base import JSON
from safehold.api.errors import invalid_spec
from safehold.api.kinds import KindInfo
from safehold.api.restore import RestoreRequestStatus
from safehold.api.verification import BackupVerificationStatus
from safehold.engine import leases
from safehold.engine.gateway import Gateway
from safehold.engine.queue import FairQueue
from safehold.kube.clients import Clients
from safehold.kube.events import post_event
from safehold.kube.resources import patch_status
from safehold.planning.runs import TERMINAL, Outcome, finished, phase_of, queued

log = logging.getLogger(__name__)
StatusT = TypeVar("StatusT", BackupStatus, RestoreRequestStatus, BackupVerificationStatus)


class OneShotRun(Generic[StatusT]):
    info: ClassVar[KindInfo]
    status_model: ClassVar[
        type[BackupStatus] | type[RestoreRequestStatus] | type[BackupVerificationStatus]
    ]

    def __init__(self, clients: Clients, body: JSON, gateway: Gateway) -> None:
        self.clients = clients
        self.gateway = gateway
        self.body = body
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.generation: int | None = meta.get("generation")
        self.status: StatusT = self.status_model.model_validate(body.get("status") or {})  # type: ignore[assignment]

    def _write(self) -> None:
        # A drill's conditions only ever give Succeeded or Failed.
        self.status.phase = phase_of(self.status.conditions)  # type: ignore[assignment]
        patch_status(
            self.clients.custom, self.info, self.namespace, self.name, self.status.to_wire()
        )

    def _finished(self, outcome: Outcome) -> None:
        """Hook after the final status is written (metrics)."""

    def _finish(self, outcome: Outcome, reason: str, message: str) -> None:
        now = datetime.now(UTC)
        self.status.conditions = finished(
            self.status.conditions, outcome, reason, message, self.generation, now
        )
        self.status.completion_time = now
        self._write()
        self._finished(outcome)
        post_event(
            self.clients.core,
            self.info.kind,
            self.namespace,
            self.name,
            self.body["metadata"].get("uid"),
            "Normal" if outcome == "Succeeded" else "Warning",
            reason,
            message,
        )

    def mark_queued(self, ahead: int) -> None:
        """Say that the run waits for a free slot (only before it ever started)."""
        if self.status.phase not in (None, "New") or self.status.start_time is not None:
            return
        message = f"queued: {ahead} run(s) of this namespace ahead" if ahead else "queued"
        self.status.conditions = queued(
            self.status.conditions, message, self.generation, datetime.now(UTC)
        )
        try:
            self._write()
        except Exception:  # best effort: the run writes its status when it starts
            log.debug("could not mark %s/%s queued", self.namespace, self.name, exc_info=True)

    def run(self) -> None:
        if self.status.phase in TERMINAL:
            return
        try:
            self._run()
        except ValidationError as err:  # what the schema let through, e.g. an older CRD
            failure = invalid_spec(err)
            self._finish("Failed", failure.reason, failure.message)
        except Exception as err:
            # Never leave a run Running forever: an unexpected error ends it.
            log.exception("%s %s/%s failed unexpectedly", self.info.kind, self.namespace, self.name)
            self._finish("Failed", "InternalError", f"{type(err).__name__}: {err}")

    def _run(self) -> None:
        raise NotImplementedError


TAKEOVER_POLL = 15.0


def submit(
    queue: FairQueue,
    clients: Clients,
    gateway: Gateway,
    run_type: type[OneShotRun[Any]],
    body: JSON,
    group: str,
) -> None:
    """Queue one run of `body`; it starts from the object as it is then (and not at all when
    the object was deleted or replaced meanwhile)."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]

    def work() -> None:
        while True:
            fresh = clients.rest.get_or_none(run_type.info.path(namespace, name))
            if fresh is None or fresh["metadata"]["uid"] != uid:
                return  # deleted (or replaced) while it waited
            if (fresh.get("status") or {}).get("phase") in TERMINAL:
                return  # another replica finished it
            with leases.held(clients.rest, uid) as mine:
                if mine:
                    run_type(clients, fresh, gateway).run()
                    return
            time.sleep(TAKEOVER_POLL)  # another replica runs it; take over if it dies

    # Said before it is queued: a run that is picked at once and ends at once must never have
    # its final status overwritten by this.
    if not queue.has(uid):
        run_type(clients, body, gateway).mark_queued(queue.waiting(namespace))
    queue.submit(uid, namespace, group, work)
