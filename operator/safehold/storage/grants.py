"""Repository grants: the only credential a mover gets for object storage.

A grant lets its holder use one restic repository of one storage location through the
repository gateway (storage/gateway.py), in one mode, until it expires:

- `append`: read everything, add new data, index and snapshot files (never overwrite, never
  delete), take and release its own locks. What a backup mover needs.
- `read`: read everything, write nothing (movers run restic with --no-lock). What a restore
  mover needs.

A grant is stateless: its fields travel as the HTTP Basic user name (base64url JSON) and an
HMAC-SHA256 over them, with the gateway's key, is the password. Any replica of the operator
holding the key verifies it, also after a restart. S3 credentials never leave the operator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from safehold.api.errors import Failure

Mode = Literal["append", "read"]
MODES: tuple[Mode, ...] = ("append", "read")
# A repository key below a location's prefix: lower-case path segments, no `..`.
_REPOSITORY = re.compile(r"^[a-z0-9][a-z0-9.-]*(/[a-z0-9][a-z0-9.@-]*){1,3}$")
MAX_CREDENTIAL = 1024


class GrantInvalid(Failure):
    """The credential is malformed, forged, expired or revoked."""


@dataclass(frozen=True)
class Grant:
    location_namespace: str
    location: str
    repository: str
    """Key of the repository below the location's prefix, e.g. repositories/shop."""
    mode: Mode
    expires: int
    """Unix seconds."""
    nonce: str
    """Tells grants apart, so one can be revoked alone."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise GrantInvalid("GrantInvalid", f"unknown grant mode {self.mode!r}")
        if not _REPOSITORY.match(self.repository) or ".." in self.repository:
            raise GrantInvalid("GrantInvalid", f"invalid repository key {self.repository!r}")

    @classmethod
    def issue(
        cls,
        location_namespace: str,
        location: str,
        repository: str,
        mode: Mode,
        expires: datetime,
    ) -> Grant:
        return cls(
            location_namespace,
            location,
            repository,
            mode,
            int(expires.timestamp()),
            secrets.token_hex(8),
        )

    def username(self) -> str:
        doc = [self.location_namespace, self.location, self.repository, self.mode, self.expires]
        raw = json.dumps([*doc, self.nonce], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mac(key: bytes, username: str) -> str:
    digest = hmac.new(key, username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(key: bytes, grant: Grant) -> tuple[str, str]:
    """(user name, password) of the grant, for RESTIC_REST_USERNAME / RESTIC_REST_PASSWORD."""
    username = grant.username()
    return username, _mac(key, username)


def verify(key: bytes, username: str, password: str, now: datetime | None = None) -> Grant:
    """The grant these credentials carry; GrantInvalid when they are not valid now."""
    if len(username) > MAX_CREDENTIAL or len(password) > MAX_CREDENTIAL:
        raise GrantInvalid("GrantInvalid", "credential too long")
    if not hmac.compare_digest(_mac(key, username), password):
        raise GrantInvalid("GrantInvalid", "credential not signed by this gateway")
    try:
        raw = base64.urlsafe_b64decode(username + "=" * (-len(username) % 4))
        ns, location, repository, mode, expires, nonce = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as err:
        raise GrantInvalid("GrantInvalid", f"malformed credential: {err}") from None
    if not all(isinstance(v, str) for v in (ns, location, repository, mode, nonce)):
        raise GrantInvalid("GrantInvalid", "malformed credential")
    if not isinstance(expires, int):
        raise GrantInvalid("GrantInvalid", "malformed credential")
    grant = Grant(ns, location, repository, mode, expires, nonce)
    moment = now or datetime.now(UTC)
    if moment.timestamp() > grant.expires:
        raise GrantInvalid("GrantExpired", "credential expired")
    return grant


def new_key() -> bytes:
    return secrets.token_bytes(32)
