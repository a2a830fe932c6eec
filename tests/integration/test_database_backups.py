"""Database targets driven by the operator: a Backup dumps a real PostgreSQL through a mover
Job (run by the node agent, completed by the real Job controller) and a RestoreRequest
restores it under another name; a failing target makes the backup PartiallyFailed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.databases import DatabaseUnavailable, PostgreSQL
from localcluster.helpers import kubectl
from localcluster.objects import apply, create_and_wait, secret
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.pki import server_tls

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL]:
    try:
        server = PostgreSQL().start()
    except DatabaseUnavailable as err:
        pytest.fail(f"PostgreSQL must run in the integration tier: {err}")
    yield server
    server.stop()


def test_postgres_target_round_trip_and_a_failing_target(
    local_cluster: LocalCluster, ops_bucket: str, postgres: PostgreSQL
) -> None:
    suffix = uuid.uuid4().hex[:6]
    db, clerk = f"shop_{suffix}", f"clerk_{suffix}"
    postgres.psql(f"CREATE DATABASE {db}; CREATE ROLE {clerk};")
    postgres.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);"
        "INSERT INTO orders (item) SELECT 'Bücher ' || g FROM generate_series(1, 5000) g;",
        db,
    )
    postgres.psql(f"GRANT SELECT ON orders TO {clerk};", db)
    checksum = postgres.psql("SELECT md5(string_agg(item, ',' ORDER BY id)) FROM orders;", db)
    name = f"pg-{uuid.uuid4().hex[:6]}"
    apply(
        local_cluster,
        OPS,
        secret(f"{name}-creds", {"username": postgres.user, "password": postgres.password}),
    )
    targets = [
        {
            "name": "main",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": postgres.port,
            "databases": [db],
            "credentialsSecret": {"name": f"{name}-creds"},
        },
        {
            "name": "gone",
            "type": "postgresql",
            "host": "127.0.0.1",
            "port": postgres.port,
            "databases": ["does_not_exist"],
            "credentialsSecret": {"name": f"{name}-creds"},
        },
    ]
    done = create_and_wait(
        local_cluster,
        OPS,
        "Backup",
        name,
        {
            "storageLocation": "main",
            "selection": {"includedResources": ["configmaps"]},
            "databases": targets,
        },
        timeout=240,
    )
    status = done["status"]
    assert status["phase"] == "PartiallyFailed", status
    results = {d["target"]: d for d in status["databases"]}
    assert results["main"]["result"] == "Succeeded", results["main"]
    assert results["main"]["databases"] == [db]
    assert results["main"]["snapshots"]
    # Each file and its snapshot, so that the restore below reads them without a listing.
    files = {f["path"]: f for f in results["main"]["files"]}
    assert set(files) == {
        f"postgresql/{db}.dump",
        "postgresql/globals.sql",
        "postgresql/counts.json",
    }, files
    assert {f["snapshot"] for f in files.values()} == set(results["main"]["snapshots"])
    assert files[f"postgresql/{db}.dump"]["bytes"] > 0
    assert results["main"]["serverVersion"].startswith("15")
    assert results["gone"]["result"] == "Failed"
    assert results["gone"]["message"].startswith("DatabaseNotFound")
    assert any("database target gone" in e for e in status["errors"])
    logs = kubectl(local_cluster, "get", "secret", "-n", OPS, "-o", "json").stdout
    assert postgres.password not in str(status)
    assert "db-password" not in logs  # nothing named after the password leaks into names

    # The role is lost as well: the restore replays the stored roles first (restoreAccounts),
    # else the dump's GRANT to it would fail.
    postgres.psql(f"DROP OWNED BY {clerk};", db)
    postgres.psql(f"DROP ROLE {clerk};")
    copy = f"{db}_copy"
    main = {"target": "main", "databaseMapping": {db: copy}, "restoreAccounts": True}
    restored = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        name,
        {"backupRef": {"name": name}, "databases": {"targets": [main]}},
        timeout=240,
    )
    dbs = {d["target"]: d for d in restored["status"]["databases"]}
    assert dbs["main"]["result"] == "Succeeded", restored["status"]
    grant = f"SELECT has_table_privilege('{clerk}', 'orders', 'SELECT');"
    assert postgres.psql(grant, copy).strip() == "t"
    assert (
        postgres.psql("SELECT md5(string_agg(item, ',' ORDER BY id)) FROM orders;", copy)
        == checksum
    )
    assert postgres.psql("SELECT nextval('orders_id_seq');", copy).strip() == "5001"

    # The same restore again: the copy exists. The message names the RestoreRequest's field.
    again = create_and_wait(
        local_cluster,
        OPS,
        "RestoreRequest",
        f"{name}-again",
        {"backupRef": {"name": name}, "databases": {"targets": [main]}},
        timeout=240,
    )["status"]
    refused = {d["target"]: d for d in again["databases"]}["main"]
    assert refused["result"] == "Failed", again
    assert refused["message"].startswith(f"DatabaseExists: already in the target: {copy};"), refused
    assert "set spec.databases.targets[].clean: true in the RestoreRequest" in refused["message"]
    assert "SAFEHOLD_" not in str(again)
    assert again["phase"] in ("PartiallyFailed", "Failed"), again


def test_tls_target_trusts_the_ca_from_its_secret(
    local_cluster: LocalCluster, ops_bucket: str, tmp_path: Path
) -> None:
    """`tls.caSecret` reaches the mover as a file: verify-full with the server's CA dumps, with
    an unrelated CA the target fails with TlsFailed."""
    right, other = server_tls(tmp_path / "server"), server_tls(tmp_path / "other")
    try:
        server = PostgreSQL(tls=right).start()
    except DatabaseUnavailable as err:
        pytest.fail(f"PostgreSQL must run in the integration tier: {err}")
    try:
        db = f"tls_{uuid.uuid4().hex[:6]}"
        server.psql(f"CREATE DATABASE {db};")
        name = f"pgtls-{uuid.uuid4().hex[:6]}"
        apply(
            local_cluster,
            OPS,
            secret(f"{name}-creds", {"username": server.user, "password": server.password}),
            secret(f"{name}-ca", {"ca.crt": right.ca_cert.read_text()}),
            secret(f"{name}-other-ca", {"ca.crt": other.ca_cert.read_text()}),
        )
        targets = [
            {
                "name": target,
                "type": "postgresql",
                "host": "127.0.0.1",
                "port": server.port,
                "databases": [db],
                "credentialsSecret": {"name": f"{name}-creds"},
                "postgresql": {"includeGlobals": False},
                "tls": {"mode": "verify-full", "caSecret": ca},
            }
            for target, ca in (("trusted", f"{name}-ca"), ("untrusted", f"{name}-other-ca"))
        ]
        done = create_and_wait(
            local_cluster,
            OPS,
            "Backup",
            name,
            {
                "storageLocation": "main",
                "selection": {"includedResources": ["configmaps"]},
                "databases": targets,
            },
            timeout=240,
        )
        results = {d["target"]: d for d in done["status"]["databases"]}
        assert results["trusted"]["result"] == "Succeeded", done["status"]
        assert results["trusted"]["databases"] == [db]
        assert results["untrusted"]["result"] == "Failed"
        assert results["untrusted"]["message"].startswith("TlsFailed"), results["untrusted"]
        assert done["status"]["phase"] == "PartiallyFailed"

        # A restore target's own TLS settings replace the original's: with the other CA the
        # restore fails, without its own settings it uses the original's CA and succeeds.
        def restore(suffix: str, override: dict[str, object]) -> dict[str, Any]:
            target = {"target": "trusted", "databaseMapping": {db: f"{db}_{suffix}"}} | override
            done = create_and_wait(
                local_cluster,
                OPS,
                "RestoreRequest",
                f"{name}-{suffix}",
                {"backupRef": {"name": name}, "databases": {"targets": [target]}},
                timeout=240,
            )
            result: dict[str, Any] = done["status"]["databases"][0]
            return result

        other_tls = {"mode": "verify-full", "caSecret": f"{name}-other-ca"}
        refused = restore("a", {"host": "127.0.0.1", "port": server.port, "tls": other_tls})
        assert refused["result"] == "Failed", refused
        assert refused["message"].startswith("TlsFailed"), refused
        assert restore("b", {"host": "127.0.0.1", "port": server.port})["result"] == "Succeeded"
        listed = server.psql("SELECT datname FROM pg_database")
        assert f"{db}_b" in listed
        assert f"{db}_a" not in listed
    finally:
        server.stop()
