"""The drill's database check through the operator's machinery: a Backup of a real
PostgreSQL records its row counts with the dump; `check_database_target` restores it into a
scratch database with mover Jobs (node agent, real Job controller, the operator's repository
gateway), compares and probes, and drops it; `drop_scratch_databases` removes what a drill
killed mid-way left behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localcluster.cluster import LocalCluster
from localcluster.databases import DatabaseUnavailable, PostgreSQL, Redis
from localcluster.objects import apply, create_and_wait, get, secret
from localcluster.operator import OPERATOR_NAMESPACE as OPS
from localcluster.operator import OperatorProcess
from safehold.api.backup import DatabaseResult
from safehold.api.content import DatabaseTarget
from safehold.api.restore import DatabaseRestoreTarget
from safehold.api.verification import DatabaseCheck, DatabaseProbe
from safehold.engine.database_checks import check_database_target, drop_scratch_databases
from safehold.engine.databases import restore_target
from safehold.engine.movers import MoverLauncher
from safehold.planning import database_checks as checks

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL]:
    try:
        server = PostgreSQL().start()
    except DatabaseUnavailable as err:
        pytest.fail(f"PostgreSQL must run in the integration tier: {err}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def launcher(
    local_cluster: LocalCluster, ops_bucket: str, operator: OperatorProcess
) -> Callable[[str], MoverLauncher]:
    """MoverLaunchers of runs in the operator's namespace, whose grants the operator's
    gateway accepts (they are signed with its key)."""
    from safehold.api.location import BackupStorageLocationSpec
    from safehold.engine.gateway import Gateway, load_or_create_key
    from safehold.kube.clients import Clients
    from safehold.kube.locations import resolve_location

    clients = Clients.from_api_client(local_cluster.api_client())
    spec = get(local_cluster, OPS, "backupstoragelocation", "main")["spec"]
    resolved = resolve_location(
        clients.core, OPS, "main", BackupStorageLocationSpec.model_validate(spec)
    )
    url = f"http://127.0.0.1:{operator.gateway_port}"
    gateway = Gateway(clients, load_or_create_key(clients, OPS), url)
    return lambda run: MoverLauncher(clients, gateway, resolved, OPS, run)


def databases(pg: PostgreSQL) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database").split())


def backup(
    local_cluster: LocalCluster, pg: PostgreSQL, db: str, name: str
) -> tuple[DatabaseResult, DatabaseTarget, dict[str, Any]]:
    target = {
        "name": "main",
        "type": "postgresql",
        "host": "127.0.0.1",
        "port": pg.port,
        "databases": [db],
        "credentialsSecret": {"name": "pg-check-creds"},
    }
    done = create_and_wait(
        local_cluster,
        OPS,
        "Backup",
        name,
        {"storageLocation": "main", "selection": {"includedResources": ["configmaps"]},
         "databases": [target]},
        timeout=240,
    )  # fmt: skip
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    (dumped,) = status["databases"]
    return (
        DatabaseResult.model_validate(dumped),
        DatabaseTarget.model_validate(target),
        status,
    )


@pytest.fixture
def shop(local_cluster: LocalCluster, postgres: PostgreSQL) -> Iterator[str]:
    db = f"shop_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE DATABASE {db};")
    postgres.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, item text);"
        "INSERT INTO orders (item) SELECT 'Bücher ' || g FROM generate_series(1, 5000) g;"
        "CREATE TABLE customers (id int); INSERT INTO customers SELECT generate_series(1, 40);",
        db,
    )
    creds = {"username": postgres.user, "password": postgres.password}
    apply(local_cluster, OPS, secret("pg-check-creds", creds))
    yield db
    postgres.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE);")


def test_a_good_dump_passes_and_a_false_probe_fails_naming_it(
    local_cluster: LocalCluster,
    postgres: PostgreSQL,
    shop: str,
    launcher: Callable[[str], MoverLauncher],
) -> None:
    name = f"chk-{uuid.uuid4().hex[:6]}"
    dumped, target, status = backup(local_cluster, postgres, shop, name)
    # The counts are a file of the dump in the repository, not part of the Backup's status.
    paths = {f.path for f in dumped.files}
    assert paths == {f"postgresql/{shop}.dump", "postgresql/globals.sql", "postgresql/counts.json"}
    assert dumped.databases == [shop]
    assert "5000" not in str(status["databases"])

    suffix = uuid.uuid4().hex[:8]
    scratch = checks.scratch_name(shop, suffix)
    created: list[str] = []
    dropped: list[str] = []

    def on_created(entries: list[str]) -> None:
        assert scratch not in databases(postgres)  # reported before it exists
        created.extend(entries)

    item = "SELECT item FROM orders WHERE id = 3"
    probes = [
        DatabaseProbe(name="orders", query="SELECT count(*) FROM orders", expect=">= 1000"),
        DatabaseProbe(name="item", query=item, expect="== Bücher 3"),
    ]
    check = DatabaseCheck(target="main", probes=probes)
    result = check_database_target(
        launcher(name), OPS, dumped, target, check, suffix, on_created, dropped.extend
    )
    assert (result.name, result.result, result.reason) == ("database:main", "Passed", None), result
    assert result.message.startswith(f"restored into {scratch} on 127.0.0.1:{postgres.port} in ")
    assert result.message.endswith(
        "; row counts of 2 tables (5040 rows) match the backup's; probes passed: orders, item"
    )
    assert (result.duration_seconds or 0) > 0
    assert created == dropped == [f"main/{scratch}"]
    assert scratch not in databases(postgres)

    # A probe whose expectation is false fails the check, naming the probe; the scratch
    # database is dropped all the same.
    probes = [
        DatabaseProbe(name="orders-min", query="SELECT count(*) FROM orders", expect=">= 1000000")
    ]
    check = DatabaseCheck(target="main", probes=probes)
    suffix = uuid.uuid4().hex[:8]
    dropped.clear()
    result = check_database_target(
        launcher(f"{name}-p"), OPS, dumped, target, check, suffix, created.extend, dropped.extend
    )
    assert (result.result, result.reason) == ("Failed", "ProbeFailed"), result
    assert result.message.startswith(
        'probe orders-min: SELECT count(*) FROM orders returned "5000", expected >= 1000000;'
    )
    assert dropped == [f"main/{checks.scratch_name(shop, suffix)}"]
    assert checks.scratch_name(shop, suffix) not in databases(postgres)


def test_a_dump_that_lost_rows_fails_with_row_count_mismatch(
    local_cluster: LocalCluster,
    postgres: PostgreSQL,
    shop: str,
    launcher: Callable[[str], MoverLauncher],
) -> None:
    """The dump file of a later backup, whose table lost ten rows, against the counts the
    first backup recorded: the check fails naming the table, expected and found."""
    name = f"lost-{uuid.uuid4().hex[:6]}"
    dumped, target, _ = backup(local_cluster, postgres, shop, name)
    postgres.psql("DELETE FROM orders WHERE id <= 10;", shop)
    later, _, _ = backup(local_cluster, postgres, shop, f"{name}-later")
    dump_file = f"postgresql/{shop}.dump"
    swapped = [
        next(f for f in later.files if f.path == dump_file) if f.path == dump_file else f
        for f in dumped.files
    ]
    mixed = dumped.model_copy(update={"files": swapped})
    suffix = uuid.uuid4().hex[:8]
    result = check_database_target(launcher(name), OPS, mixed, target, None, suffix, lambda e: None)
    assert (result.result, result.reason) == ("Failed", "RowCountMismatch"), result
    assert result.message == (
        f"row counts differ in 1 of 2 tables: {shop}: public.orders: 5000 rows at backup time,"
        " 4990 restored"
    )
    assert checks.scratch_name(shop, suffix) not in databases(postgres)


def test_an_unreachable_scratch_server_and_leftovers_after_a_restart(
    local_cluster: LocalCluster,
    postgres: PostgreSQL,
    shop: str,
    launcher: Callable[[str], MoverLauncher],
) -> None:
    name = f"left-{uuid.uuid4().hex[:6]}"
    dumped, target, _ = backup(local_cluster, postgres, shop, name)

    # A scratch server that does not answer: TargetNotReady, nothing to drop.
    dropped: list[str] = []
    nowhere = DatabaseCheck(target="main", host="127.0.0.1", port=9)
    result = check_database_target(
        launcher(name), OPS, dumped, target, nowhere, "nowhere", lambda e: None,
        dropped.extend, ready_timeout="2s",
    )  # fmt: skip
    assert (result.result, result.reason) == ("Failed", "TargetNotReady"), result
    assert result.message.startswith(
        "restore: TargetNotReady: 127.0.0.1:9 did not accept connections within 2 s"
    ), result
    assert dropped == [f"main/{checks.scratch_name(shop, 'nowhere')}"]

    # What a drill killed after its restore left: a scratch database, found again by the
    # entries its status recorded, and dropped. An entry of another shape is never dropped.
    suffix = uuid.uuid4().hex[:8]
    scratch = checks.scratch_name(shop, suffix)
    override = DatabaseRestoreTarget(target="main", database_mapping={shop: scratch})
    restored = restore_target(launcher(f"{name}-r"), OPS, dumped, target, override)
    assert restored.result == "Succeeded", restored
    assert scratch in databases(postgres)
    entries = [f"main/{scratch}", f"main/{shop}", f"other/{scratch}"]
    left = drop_scratch_databases(launcher(f"{name}-d"), OPS, dumped, target, None, entries)
    assert left == [f"main/{shop}"]
    assert scratch not in databases(postgres)
    assert shop in databases(postgres)


def test_redis_is_checked_on_a_scratch_server_only(
    local_cluster: LocalCluster, launcher: Callable[[str], MoverLauncher]
) -> None:
    """Without a scratch host the check is Skipped; with one, the drill's restore marks
    what it writes there, the check compares the key counts and flushes exactly that."""
    source, scratch = Redis().start(), Redis().start()
    try:
        source.cli("FLUSHALL")
        source.cli("EVAL", "for i=1,250 do redis.call('SET','k:'..i,i) end", "0")
        source.cli("SET", "config:version", "7", db=2)
        name = f"rchk-{uuid.uuid4().hex[:6]}"
        apply(
            local_cluster,
            OPS,
            secret(f"{name}-src", {"password": source.password}),
            secret(f"{name}-scratch", {"password": scratch.password}),
        )
        spec = {
            "name": "cache", "type": "redis", "host": "127.0.0.1", "port": source.port,
            "credentialsSecret": {"name": f"{name}-src"},
        }  # fmt: skip
        done = create_and_wait(
            local_cluster, OPS, "Backup", name,
            {"storageLocation": "main", "selection": {"includedResources": ["configmaps"]},
             "databases": [spec]},
            timeout=240,
        )  # fmt: skip
        assert done["status"]["phase"] == "Succeeded", done["status"]
        dumped = DatabaseResult.model_validate(done["status"]["databases"][0])
        target = DatabaseTarget.model_validate(spec)

        skipped = check_database_target(
            launcher(name), OPS, dumped, target, None, "s1", lambda e: pytest.fail("created")
        )
        assert (skipped.result, skipped.reason) == ("Skipped", "ScratchServerRequired")

        scratch.cli("SET", "unrelated", "stays", db=9)
        version = DatabaseProbe(
            name="version", database="2", query="GET config:version", expect="== 7"
        )
        probes = [DatabaseProbe(name="keys", query="DBSIZE", expect="== 250"), version]
        check = DatabaseCheck(
            target="cache", host="127.0.0.1", port=scratch.port,
            credentials_secret=f"{name}-scratch", probes=probes,
        )  # fmt: skip
        suffix = uuid.uuid4().hex[:8]
        created: list[str] = []
        result = check_database_target(
            launcher(name), OPS, dumped, target, check, suffix, created.extend
        )
        assert (result.result, result.reason) == ("Passed", None), result
        assert result.message.endswith(
            "row counts of 2 tables (251 rows) match the backup's; probes passed: keys, version"
        )
        assert created == [f"cache/drill_{suffix}"]
        keyspace = scratch.cli("INFO", "keyspace").split()
        assert keyspace == ["#", "Keyspace", "db9:keys=1,expires=0,avg_ttl=0"]
        assert source.cli("DBSIZE").strip() == "250"  # the original was never written
    finally:
        source.stop()
        scratch.stop()
