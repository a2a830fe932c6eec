"""The repository password: one trailing newline of the Secret is not part of it, and a
repository created with the newline keeps opening (the probe's finding, carried by the
location's status into every run)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import pytest

from safehold.api.location import BackupStorageLocationSpec, BackupStorageLocationStatus
from safehold.planning.locations import (
    NEWLINE_CONDITION,
    password_with_newline,
    status_after_probe,
)
from safehold.storage.location import ResolvedLocation, strip_one_newline
from safehold.storage.s3 import S3Settings

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "typed"),
    [
        ("pw", "pw"),
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw\n\n", "pw\n"),
        ("pw\r", "pw\r"),
        (" pw \n", " pw "),
        ("", ""),
        ("\n", ""),
    ],
)
def test_exactly_one_trailing_newline_is_stripped(stored: str, typed: str) -> None:
    assert strip_one_newline(stored) == typed


def location(secret: str, with_newline: bool = False) -> ResolvedLocation:
    spec = BackupStorageLocationSpec.model_validate(
        {
            "endpoint": "http://127.0.0.1:9",
            "bucket": "bucket",
            "credentialsSecret": {"name": "s3"},
            "repositoryPasswordSecret": {"name": "pw"},
        }
    )
    s3 = S3Settings(
        bucket="bucket",
        prefix="",
        region="us-east-1",
        endpoint="http://127.0.0.1:9",
        force_path_style=True,
        access_key_id="a",
        secret_access_key="s",
    )
    return ResolvedLocation("ops", "main", spec, s3, secret, with_newline)


def derived(password: str, owner: str, source: str) -> str:
    message = f"safehold.io/namespace-repository\0{owner}\0{source}".encode()
    return hmac.new(password.encode(), message, "sha256").hexdigest()


@pytest.mark.parametrize(
    ("secret", "with_newline", "password"),
    [
        ("Pa55-word\n", False, "Pa55-word"),
        ("Pa55-word\n", True, "Pa55-word\n"),
        ("Pa55-word\r\n", True, "Pa55-word\r\n"),
        ("Pa55-word", False, "Pa55-word"),
        (
            "Pa55-word",
            True,
            "Pa55-word\n",
        ),  # the Secret re-created by hand for a repository made with "\n"
    ],
)
def test_every_repository_and_derivation_uses_the_same_password(
    secret: str, with_newline: bool, password: str
) -> None:
    loc = location(secret, with_newline)
    assert loc.repository_password == password
    assert loc.repository("ops").env["RESTIC_PASSWORD"] == password
    assert loc.repository_password_for("repositories/ops") == password
    key = "namespace-repositories/ops/shop"
    assert loc.repository_password_for(key) == derived(password, "ops", "shop")
    assert loc.repository_at(key).env["RESTIC_PASSWORD"] == derived(password, "ops", "shop")
    assert secret not in repr(loc)


def test_the_newline_variant() -> None:
    assert location("pw\n").newline_variant().repository_password == "pw\n"
    assert location("pw").newline_variant().repository_password == "pw\n"


def probe(status: BackupStorageLocationStatus, ok: bool, newline: bool, reason: str = "Available"):  # type: ignore[no-untyped-def]
    return status_after_probe(status, ok, reason, "m", True, 3, NOW, newline)


def test_the_newline_condition_follows_successful_probes() -> None:
    found = probe(BackupStorageLocationStatus(), True, True)
    [cond] = [c for c in found.conditions if c.type == NEWLINE_CONDITION]
    assert (cond.status, cond.reason) == ("True", "PasswordNeedsNewline")
    assert "followed by a newline" in cond.message
    assert password_with_newline({"status": found.to_wire()})
    # a probe failing for another reason says nothing about the password: kept
    failed = probe(found, False, False, "EndpointUnreachable")
    assert password_with_newline({"status": failed.to_wire()})
    # a probe that opened the repository without the newline removes it
    fixed = probe(failed, True, False)
    assert [c.type for c in fixed.conditions] == ["Ready"]
    assert not password_with_newline({"status": fixed.to_wire()})
    assert not password_with_newline(None)
