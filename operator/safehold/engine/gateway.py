"""The repository gateway in the operator: its signing key (a Secret in the operator's
namespace, shared by replicas), its HTTP server, and the grants mover Jobs get.

Movers never receive S3 credentials: each gets a grant for the one repository it works on,
in `append` mode for backups and `read` mode for restores, valid until its Job's deadline and
revoked as soon as the Job has ended (storage/grants.py, storage/gateway.py).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from safehold.api.base import JSON
from safehold.api.kinds import LOCATION
from safehold.api.labels import LABEL_COMPONENT, LABEL_INTERNAL
from safehold.api.location import BackupStorageLocationSpec
from safehold.engine.errors import RunError
from safehold.engine.settings import operator_namespace
from safehold.kube.clients import Clients
from safehold.kube.locations import resolve_location
from safehold.kube.rest import ApiError
from safehold.kube.secrets import SecretProblem
from safehold.planning.builders import build_secret
from safehold.planning.resource_types import resource_path
from safehold.storage.gateway import GatewayServer, RepositoryGateway
from safehold.storage.grants import Grant, Mode, new_key, sign
from safehold.storage.location import ResolvedLocation

log = logging.getLogger(__name__)
KEY_SECRET = "safehold-gateway-key"  # noqa: S105 - the name of a Secret
KEY_FIELD = "key"
RESOLVE_CACHE_SECONDS = 30.0
DEFAULT_PORT = 8082


def gateway_url() -> str:
    """The address movers reach the gateway at (the chart sets SAFEHOLD_GATEWAY_URL)."""
    return os.environ.get("SAFEHOLD_GATEWAY_URL") or (
        f"http://safehold-gateway.{operator_namespace()}.svc:{DEFAULT_PORT}"
    )


def load_or_create_key(clients: Clients, namespace: str) -> bytes:
    """The gateway's signing key from its Secret, created on first start."""
    path = resource_path("", "v1", "secrets", namespace, KEY_SECRET)
    for _ in range(3):
        found = clients.rest.get_or_none(path)
        if found is not None:
            return base64.b64decode((found.get("data") or {})[KEY_FIELD])
        body = build_secret(
            KEY_SECRET,
            namespace,
            {KEY_FIELD: ""},
            {LABEL_COMPONENT: "gateway", LABEL_INTERNAL: "true"},
        )
        body.pop("stringData")
        body["data"] = {KEY_FIELD: base64.b64encode(new_key()).decode()}
        try:
            clients.rest.create(resource_path("", "v1", "secrets", namespace), body)
        except ApiError as err:
            if err.status != 409:  # another replica created it meanwhile: read it
                raise
    raise RunError("GatewayKeyUnavailable", f"Secret {namespace}/{KEY_SECRET} cannot be read")


class _Locations:
    """Resolves a grant's location (its spec and Secrets), cached briefly: the gateway asks
    for every request. Readiness is not required: a probe failing mid-backup must not cut off
    running movers (the store's own errors reach them)."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self._cache: dict[tuple[str, str], tuple[float, ResolvedLocation]] = {}
        self._lock = threading.Lock()

    def __call__(self, namespace: str, name: str) -> ResolvedLocation:
        key = (namespace, name)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < RESOLVE_CACHE_SECONDS:
            return hit[1]
        body: JSON | None = self.clients.rest.get_or_none(LOCATION.path(namespace, name))
        if body is None:
            raise RunError("LocationNotFound", f"BackupStorageLocation {namespace}/{name} is gone")
        spec = BackupStorageLocationSpec.model_validate(body.get("spec") or {})
        try:
            resolved = resolve_location(self.clients.core, namespace, name, spec)
        except SecretProblem as err:
            raise RunError(err.reason, err.message) from None
        with self._lock:
            self._cache[key] = (time.monotonic(), resolved)
        return resolved


@dataclass(frozen=True)
class Credentials:
    """What one mover gets to reach its repository (goes into its Secret)."""

    grant: Grant
    username: str
    password: str
    url: str


class Gateway:
    """Issues and revokes grants, and serves them (when started)."""

    def __init__(self, clients: Clients, key: bytes, url: str | None = None) -> None:
        self.key = key
        self.url = url or gateway_url()
        self.logic = RepositoryGateway(key, _Locations(clients))
        self.server: GatewayServer | None = None

    @classmethod
    def for_operator(cls, clients: Clients) -> Gateway:
        return cls(clients, load_or_create_key(clients, operator_namespace()))

    def start(self, address: str, port: int) -> Gateway:
        self.server = GatewayServer(self.logic, address, port).start()
        log.info(
            "repository gateway listening on %s:%d for %s", address, self.server.port, self.url
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def issue(
        self, location: ResolvedLocation, repository: str, mode: Mode, valid: timedelta
    ) -> Credentials:
        grant = Grant.issue(
            location.namespace, location.name, repository, mode, datetime.now(UTC) + valid
        )
        username, password = sign(self.key, grant)
        return Credentials(grant, username, password, self.url)

    def revoke(self, credentials: Credentials) -> None:
        self.logic.revoke(credentials.grant)
