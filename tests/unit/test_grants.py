"""Repository grants: signed, scoped, expiring; anything altered is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safehold.storage.grants import Grant, GrantInvalid, sign, verify

KEY = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def grant(**changes: object) -> Grant:
    base = {
        "location_namespace": "ops",
        "location": "main",
        "repository": "namespace-repositories/ops/shop",
        "mode": "append",
        "expires": NOW + timedelta(hours=1),
    }
    base.update(changes)
    return Grant.issue(**base)  # type: ignore[arg-type]


def test_a_signed_grant_verifies_and_carries_its_scope() -> None:
    issued = grant()
    user, password = sign(KEY, issued)
    assert verify(KEY, user, password, NOW) == issued
    assert "main" not in password


@pytest.mark.parametrize(
    ("alter", "reason"),
    [
        (lambda u, p: (u, p[:-2] + "xx"), "GrantInvalid"),
        (lambda u, p: (u[:-4] + "AAAA", p), "GrantInvalid"),
        (lambda u, p: (u, sign(b"x" * 32, grant())[1]), "GrantInvalid"),
        (lambda u, p: ("x" * 2000, p), "GrantInvalid"),
    ],
)
def test_altered_credentials_are_refused(alter: object, reason: str) -> None:
    user, password = sign(KEY, grant())
    with pytest.raises(GrantInvalid) as err:
        verify(KEY, *alter(user, password), NOW)  # type: ignore[operator]
    assert err.value.reason == reason


def test_expired_grant_is_refused() -> None:
    user, password = sign(KEY, grant(expires=NOW - timedelta(seconds=1)))
    with pytest.raises(GrantInvalid) as err:
        verify(KEY, user, password, NOW)
    assert err.value.reason == "GrantExpired"


@pytest.mark.parametrize("key", ["../etc", "repositories/../x", "/abs/path", "Repos/x", "a"])
def test_repository_keys_are_confined(key: str) -> None:
    with pytest.raises(GrantInvalid):
        grant(repository=key)
