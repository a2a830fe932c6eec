"""S3Settings.ca_file: one private file per CA bundle, however often a location is probed."""

from __future__ import annotations

import stat

from safehold.storage.s3 import S3Settings

PEM_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
PEM_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"


def settings(ca_bundle: str | None) -> S3Settings:
    return S3Settings(
        bucket="b",
        prefix="",
        region="us-east-1",
        endpoint="https://s3.example.test",
        force_path_style=True,
        access_key_id="id",
        secret_access_key="secret",
        ca_bundle=ca_bundle,
    )


def test_same_bundle_same_file_with_its_content() -> None:
    first, second = settings(PEM_A).ca_file(), settings(PEM_A).ca_file()
    assert first is not None
    assert first == second
    assert first.read_text() == PEM_A
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700


def test_other_bundle_other_file_and_none_without_bundle() -> None:
    a, b = settings(PEM_A).ca_file(), settings(PEM_B).ca_file()
    assert a is not None
    assert b is not None
    assert a != b
    assert b.read_text() == PEM_B
    assert settings(None).ca_file() is None
