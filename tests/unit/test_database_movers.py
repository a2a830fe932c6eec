"""Pure parts of the database movers: the TLS wiring of a target's Job and the failure
classification of real client messages (as PostgreSQL 15, MariaDB 10.11 and redis-cli 7 print
them)."""

from __future__ import annotations

import pytest

from safehold.api.content import DatabaseTarget
from safehold.contract import env as menv
from safehold.engine.databases import DB_CA_KEY, target_environment
from safehold.movers import mysql, postgres, redis
from safehold.planning.builders import FILES_DIR, MoverSpec, build_job


def test_a_ca_secret_becomes_a_file_not_an_environment_variable() -> None:
    target = DatabaseTarget.model_validate(
        {
            "name": "main",
            "type": "postgresql",
            "host": "db.shop.svc",
            "tls": {"mode": "verify-full", "caSecret": "db-ca"},
        }
    )
    env = target_environment(target, "shop")
    assert env[menv.DB_TLS_MODE] == "verify-full"
    assert env[menv.DB_TLS_CA_FILE] == f"{FILES_DIR}/{DB_CA_KEY}"
    spec = MoverSpec(
        name="m",
        namespace="shop",
        verb="db-dump",
        env=env,
        secret_name="m",
        secret_keys=["RESTIC_PASSWORD"],
        file_keys=[DB_CA_KEY],
    )
    pod = build_job(spec)["spec"]["template"]["spec"]
    files = next(v for v in pod["volumes"] if v["name"] == "files")
    assert files["secret"] == {"secretName": "m", "items": [{"key": DB_CA_KEY, "path": DB_CA_KEY}]}
    container = pod["containers"][0]
    assert {"name": "files", "mountPath": FILES_DIR, "readOnly": True} in container["volumeMounts"]
    assert all(
        e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") != DB_CA_KEY
        for e in container["env"]
    )


def test_no_tls_no_files_volume() -> None:
    target = DatabaseTarget.model_validate({"name": "main", "type": "redis", "host": "r"})
    assert menv.DB_TLS_CA_FILE not in target_environment(target, "shop")


@pytest.mark.parametrize(
    ("engine", "text", "reason"),
    [
        (postgres, "FATAL:  the database system is starting up", "TargetStarting"),
        (
            postgres,
            "FATAL:  the database system is not yet accepting connections",
            "TargetStarting",
        ),
        (
            postgres,
            'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
            "HostUnreachable",
        ),
        (
            postgres,
            'connection to server at "127.0.0.1", port 5432 failed: SSL error: certificate '
            "verify failed",
            "TlsFailed",
        ),
        (
            postgres,
            'FATAL:  password authentication failed for user "postgres"',
            "AuthenticationFailed",
        ),
        (
            postgres,
            'connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "nobody" does'
            " not exist",
            "AuthenticationFailed",
        ),
        (
            postgres,
            'pg_restore: error: could not execute query: ERROR:  role "owner_1" does not exist\n'
            "Command was: ALTER SCHEMA sales OWNER TO owner_1;",
            "Other",
        ),
        (
            mysql,
            "ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial "
            "communication packet', system error: 104",
            "TargetStarting",
        ),
        (
            mysql,
            "ERROR 2002 (HY000): Can't connect to server on '127.0.0.1' (115)",
            "HostUnreachable",
        ),
        (mysql, "ERROR 2026 (HY000): TLS/SSL error: certificate verify failed", "TlsFailed"),
        (
            redis,
            "Could not negotiate a TLS connection: Invalid CA Certificate File/Directory",
            "TlsFailed",
        ),
    ],
)
def test_classification(engine: object, text: str, reason: str) -> None:
    assert engine.classify(text, "Other") == reason  # type: ignore[attr-defined]


SNAP = "0123456789abcdef" * 4


def test_dumped_files_survive_the_environment() -> None:
    files = {"postgresql/app%2Fx.dump": (SNAP, 1234), "postgresql/globals.sql": (SNAP[:8], 0)}
    assert menv.parse_files(menv.encode_files(files)) == files
    assert menv.parse_files("") == {}


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("not json", "is not JSON"),
        ("[]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ('{"a.dump": "abc"}', "no valid restic snapshot id"),
        ('{"a.dump": {"snapshot": "--help"}}', "no valid restic snapshot id"),
        (f'{{"a.dump": {{"snapshot": "{SNAP}", "bytes": -1}}}}', "invalid size"),
        (f'{{"a.dump": {{"snapshot": "{SNAP}", "bytes": true}}}}', "invalid size"),
        (f'{{"/etc/passwd": {{"snapshot": "{SNAP}"}}}}', "not a relative path"),
        (f'{{"a/../../b": {{"snapshot": "{SNAP}"}}}}', "not a relative path"),
    ],
)
def test_bad_dumped_files_are_refused(raw: str, complaint: str) -> None:
    with pytest.raises(menv.ConfigError, match=complaint):
        menv.parse_files(raw)


def test_named_files_need_no_listing() -> None:
    """With SAFEHOLD_DB_FILES the mover knows its files without starting restic (the
    repository here does not exist: a listing would fail)."""
    from safehold.movers import dbtools
    from safehold.storage import restic

    env = {
        menv.DB_TYPE: "postgresql",
        menv.DB_HOST: "db",
        menv.BACKUP: "shop/nightly",
        menv.TARGET: "main",
        menv.DB_FILES: menv.encode_files({"postgresql/app.dump": (SNAP, 42)}),
    }
    cfg = menv.from_environment(env)
    nowhere = restic.Repository(url="/nonexistent/safehold-repo", env={}, options=())
    files = dbtools.stored_files(cfg, nowhere)
    assert files == {"postgresql/app.dump": {"id": SNAP, "summary": {"total_bytes_processed": 42}}}
