"""Row counts recorded with every dump, and the drill's database check: `db-verify` compares
a scratch copy's row counts with those recorded and runs probes, then drops the copy;
`db-drop` removes what a drill left. Real PostgreSQL, MariaDB and Redis servers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo
from integration.redis_content import populate
from localcluster.databases import MariaDB, PostgreSQL, Redis
from safehold.contract import env as menv
from safehold.planning import database_checks as checks

PG_SCHEMA = '''
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id bigserial PRIMARY KEY, item text, amount numeric(10,2));
INSERT INTO shop.orders (item, amount) SELECT 'Bücher ' || g, g * 0.5
  FROM generate_series(1, 5000) g;
CREATE TABLE public.customers (id int PRIMARY KEY, name text);
INSERT INTO public.customers SELECT g, 'Kunde ' || g FROM generate_series(1, 300) g;
CREATE TABLE public."Empty ""Table""" (x int);
CREATE TABLE shop.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2025 PARTITION OF shop.events
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE shop.events_2026 PARTITION OF shop.events
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO shop.events SELECT g, date '2025-06-01' + (g % 400) FROM generate_series(1, 1000) g;
CREATE VIEW shop.big AS SELECT * FROM shop.orders WHERE amount > 2000;
CREATE MATERIALIZED VIEW shop.totals AS SELECT count(*) AS n FROM shop.orders;
'''

PG_COUNTS = {
    ("shop", "orders"): 5000,
    ("public", "customers"): 300,
    ("public", 'Empty "Table"'): 0,
    ("shop", "events_2025"): 628,
    ("shop", "events_2026"): 372,
}


def recorded(repo: Repo, dumped: dict[str, Any], db_type: str) -> dict[str, Any]:
    """The counts file a dump stored, read back from the repository."""
    path = f"{db_type}/counts.json"
    (item,) = [d for d in dumped["databases"] if d["file"] == path]
    doc: dict[str, Any] = json.loads(repo.restic("dump", item["snapshot"], "/" + path))
    return doc


def files(dumped: dict[str, Any], replace: dict[str, str] | None = None) -> str:
    """SAFEHOLD_DB_FILES of a dump, as the operator sets it; `replace` swaps snapshots."""
    named = {d["file"]: (d["snapshot"], d["bytesProcessed"]) for d in dumped["databases"]}
    for path, snapshot in (replace or {}).items():
        named[path] = (snapshot, 100)
    return menv.encode_files(named)


def tables(doc: dict[str, Any], database: str) -> dict[tuple[str, str], int]:
    (db,) = [d for d in doc["databases"] if d["name"] == database]
    return {(t.get("schema", ""), t["table"]): t["rows"] for t in db["tables"]}


def write_probes(repo: Repo, *probes: checks.PlannedProbe) -> Path:
    path = repo.workdir / f"probes-{uuid.uuid4().hex[:6]}.json"
    path.write_text(checks.probes_json(probes))
    return path


def pg_databases(pg: PostgreSQL) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database").split())


@pytest.fixture
def shop(postgres: PostgreSQL) -> Iterator[str]:
    db = f"shop_{uuid.uuid4().hex[:6]}"
    postgres.psql(f"CREATE DATABASE {db};")
    postgres.psql(PG_SCHEMA, db)
    yield db
    postgres.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE);")


def pg_restore_scratch(
    repo: Repo, pg: PostgreSQL, dumped: dict[str, Any], db: str, suffix: str
) -> str:
    scratch = checks.scratch_name(db, suffix)
    code, restored = repo.mover(
        "db-restore", "postgresql", pg, db_files=files(dumped), db_mapping=f"{db}:{scratch}"
    )
    assert code == 0, restored
    return scratch


def test_postgres_counts_recorded_in_the_dumps_snapshot_and_a_good_copy_passes(
    postgres: PostgreSQL, repo: Repo, shop: str
) -> None:
    code, dumped = repo.mover("db-dump", "postgresql", postgres, db_databases=shop)
    assert code == 0, dumped
    doc = recorded(repo, dumped, "postgresql")
    assert doc["format"] == 1
    assert tables(doc, shop) == PG_COUNTS  # no view, materialized view or partitioned parent
    assert [d["exact"] for d in doc["databases"]] == [True]
    live = postgres.psql("SELECT count(*) FROM shop.events_2025", shop).strip()
    assert int(live) == PG_COUNTS[("shop", "events_2025")]

    suffix = uuid.uuid4().hex[:8]
    scratch = pg_restore_scratch(repo, postgres, dumped, shop, suffix)
    orders, item = "SELECT count(*) FROM shop.orders", "SELECT item FROM shop.orders WHERE id = 7"
    probes = write_probes(
        repo,
        checks.PlannedProbe("orders", scratch, shop, orders, ">= 1000"),
        checks.PlannedProbe("item", scratch, shop, item, "== Bücher 7"),
        checks.PlannedProbe("nothing", scratch, shop, "SELECT NULL", "== NULL"),
    )
    code, verified = repo.mover(
        "db-verify",
        "postgresql",
        postgres,
        db_files=files(dumped),
        db_mapping=f"{shop}:{scratch}",
        db_scratch_suffix=suffix,
        db_probes_file=str(probes),
    )
    assert code == 0, verified
    assert verified["passed"] is True, verified
    assert (verified["tables"], verified["rows"]) == (5, 6300)
    assert verified["message"] == (
        "row counts of 5 tables (6300 rows) match the backup's; probes passed: orders, item,"
        " nothing"
    )
    assert [p["passed"] for p in verified["probes"]] == [True, True, True]
    assert verified["dropped"] == [scratch]
    assert scratch not in pg_databases(postgres)
    assert shop in pg_databases(postgres)


def test_postgres_counts_match_the_dump_while_clients_write(
    postgres: PostgreSQL, repo: Repo, shop: str
) -> None:
    """Rows inserted while the dump runs are in neither the dump nor the counts: the counts
    are those of pg_dump's snapshot, so the restored copy matches them exactly."""
    postgres.psql(
        "CREATE TABLE shop.bulk AS SELECT g AS id, md5(g::text) || repeat('x', 300) AS pad"
        " FROM generate_series(1, 300000) g;",
        shop,
    )
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            postgres.psql(
                "INSERT INTO shop.orders (item) SELECT 'neu' FROM generate_series(1, 50)", shop
            )

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.5)
        code, dumped = repo.mover("db-dump", "postgresql", postgres, db_databases=shop)
    finally:
        stop.set()
        writer.join()
    assert code == 0, dumped
    at_dump = tables(recorded(repo, dumped, "postgresql"), shop)[("shop", "orders")]
    after = int(postgres.psql("SELECT count(*) FROM shop.orders", shop))
    assert 5000 < at_dump < after  # written before, during and after the snapshot

    suffix = uuid.uuid4().hex[:8]
    scratch = pg_restore_scratch(repo, postgres, dumped, shop, suffix)
    assert int(postgres.psql("SELECT count(*) FROM shop.orders", scratch)) == at_dump
    code, verified = repo.mover(
        "db-verify",
        "postgresql",
        postgres,
        db_files=files(dumped),
        db_mapping=f"{shop}:{scratch}",
        db_scratch_suffix=suffix,
    )
    assert (code, verified["passed"]) == (0, True), verified
    assert scratch not in pg_databases(postgres)


def test_postgres_probe_that_fails_and_counts_that_do_not_match(
    postgres: PostgreSQL, repo: Repo, shop: str
) -> None:
    code, dumped = repo.mover("db-dump", "postgresql", postgres, db_databases=shop)
    assert code == 0, dumped
    suffix = uuid.uuid4().hex[:8]
    scratch = pg_restore_scratch(repo, postgres, dumped, shop, suffix)
    probes = repo.workdir / "probes.json"
    query = "SELECT count(*) FROM shop.orders"
    probes.write_text(
        checks.probes_json([checks.PlannedProbe("orders-min", scratch, shop, query, ">= 1000000")])
    )
    code, verified = repo.mover(
        "db-verify",
        "postgresql",
        postgres,
        db_files=files(dumped),
        db_mapping=f"{shop}:{scratch}",
        db_scratch_suffix=suffix,
        db_probes_file=str(probes),
    )
    assert code == 0, verified
    assert (verified["passed"], verified["reason"]) == (False, "ProbeFailed"), verified
    assert verified["message"].startswith(
        'probe orders-min: SELECT count(*) FROM shop.orders returned "5000", expected >= 1000000;'
    )
    assert scratch not in pg_databases(postgres)  # dropped although the check failed

    # Counts recorded at backup time that the copy does not match: 4990 orders recorded.
    doc = recorded(repo, dumped, "postgresql")
    for table in doc["databases"][0]["tables"]:
        if table["table"] == "orders":
            table["rows"] = 4990
    tampered = repo.workdir / "counts.json"
    tampered.write_text(json.dumps(doc))
    out = repo.restic(
        "backup", "--json", "--stdin-filename", "postgresql/counts.json", "--stdin-from-command",
        "--", "cat", str(tampered),
    )  # fmt: skip
    snapshot = json.loads(out.splitlines()[-1])["snapshot_id"]
    scratch = pg_restore_scratch(repo, postgres, dumped, shop, suffix)
    code, verified = repo.mover(
        "db-verify",
        "postgresql",
        postgres,
        db_files=files(dumped, {"postgresql/counts.json": snapshot}),
        db_mapping=f"{shop}:{scratch}",
        db_scratch_suffix=suffix,
    )
    assert code == 0, verified
    assert (verified["passed"], verified["reason"]) == (False, "RowCountMismatch"), verified
    assert verified["message"] == (
        f"row counts differ in 1 of 5 tables: {shop}: shop.orders: 4990 rows at backup time,"
        " 5000 restored"
    )
    assert scratch not in pg_databases(postgres)


def test_drop_removes_leftovers_and_nothing_else(
    postgres: PostgreSQL, mariadb: MariaDB, repo: Repo
) -> None:
    suffix = uuid.uuid4().hex[:8]
    left, real = checks.scratch_name("app", suffix), f"app_{suffix}"
    postgres.psql(f"CREATE DATABASE {left}; CREATE DATABASE {real};")
    code, doc = repo.mover(
        "db-drop", "postgresql", postgres, db_drop=f"{left},{real}", db_scratch_suffix=suffix
    )
    assert code == 0, doc
    assert doc["dropped"] == [left]
    assert doc["leftover"] == [f"{real}: not a scratch database name, never dropped"]
    assert left not in pg_databases(postgres)
    assert real in pg_databases(postgres)

    mariadb.sql(f"CREATE DATABASE {left};")
    code, doc = repo.mover("db-drop", "mysql", mariadb, db_drop=left, db_scratch_suffix=suffix)
    assert (code, doc["dropped"]) == (0, [left]), doc
    assert left not in mariadb.sql("SHOW DATABASES").split()


MARIADB_SCHEMA = """
SET SESSION max_recursive_iterations = 100000;
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(100)) ENGINE=InnoDB;
INSERT INTO orders (item)
  WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 4000)
  SELECT CONCAT('Bücher ', n) FROM seq;
CREATE TABLE `we``ird` (x INT) ENGINE=InnoDB;
INSERT INTO `we``ird` VALUES (1), (2), (3);
CREATE TABLE legacy (x INT) ENGINE=MyISAM;
INSERT INTO legacy VALUES (1), (2);
CREATE VIEW v AS SELECT * FROM orders;
"""


def test_mariadb_counts_exact_when_quiet_approximate_when_written_and_checked(
    mariadb: MariaDB, repo: Repo
) -> None:
    db = f"shop_{uuid.uuid4().hex[:6]}"
    mariadb.sql(f"CREATE DATABASE {db};")
    mariadb.sql(MARIADB_SCHEMA, db)
    code, dumped = repo.mover("db-dump", "mysql", mariadb, db_databases=db)
    assert code == 0, dumped
    doc = recorded(repo, dumped, "mysql")
    (entry,) = doc["databases"]
    assert entry["exact"] is True, entry
    assert {t["table"]: (t["rows"], t.get("exact", True)) for t in entry["tables"]} == {
        "orders": (4000, True),
        "we`ird": (3, True),
        "legacy": (2, False),  # MyISAM: not in the dump's snapshot
    }

    suffix = uuid.uuid4().hex[:8]
    scratch = checks.scratch_name(db, suffix)
    code, restored = repo.mover(
        "db-restore", "mysql", mariadb, db_files=files(dumped), db_mapping=f"{db}:{scratch}"
    )
    assert code == 0, restored
    item = "SELECT item FROM orders WHERE id = 2"
    probes = write_probes(repo, checks.PlannedProbe("item", scratch, db, item, '== "Bücher 2"'))
    code, verified = repo.mover(
        "db-verify",
        "mysql",
        mariadb,
        db_files=files(dumped),
        db_mapping=f"{db}:{scratch}",
        db_scratch_suffix=suffix,
        db_probes_file=str(probes),
    )
    assert (code, verified["passed"]) == (0, True), json.dumps(verified)
    assert verified["message"] == (
        "row counts of 2 tables (4003 rows) match the backup's; 1 tables recorded"
        " approximately (not compared exactly); probes passed: item"
    )
    assert scratch not in mariadb.sql("SHOW DATABASES").split()

    # Writes while the dump runs: the counts are marked approximate, and the check says so.
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            mariadb.sql("INSERT INTO orders (item) VALUES ('neu');", db)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        code, busy = repo.mover("db-dump", "mysql", mariadb, db_databases=db)
    finally:
        stop.set()
        writer.join()
    assert code == 0, busy
    (entry,) = recorded(repo, busy, "mysql")["databases"]
    assert entry["exact"] is False
    assert entry["note"] == "writes committed while the dump ran: counted in a snapshot of its own"
    assert all(t.get("exact") is False for t in entry["tables"])


@pytest.fixture
def scratch_redis() -> Iterator[Redis]:
    server = Redis().start()
    yield server
    server.stop()


def test_redis_key_counts_of_the_rdb_and_a_check_on_a_scratch_server(
    redis_server: Redis, scratch_redis: Redis, repo: Repo
) -> None:
    r = redis_server
    populate(r)
    # Encodings beyond the compact ones: a large hash, list, set and sorted set, a big
    # string, a stream with a consumer group and pending entries.
    script = (
        "for i=1,600 do redis.call('HSET','bighash','f'..i,i)"
        " redis.call('RPUSH','biglist',string.rep('v',100)..i)"
        " redis.call('SADD','bigset','m'..i) redis.call('ZADD','bigzset',i,'m'..i) end"
    )
    r.cli("EVAL", script, "0")
    r.cli("EVAL", "redis.call('SET','blob',string.rep('x',200000))", "0")
    r.cli("XGROUP", "CREATE", "stream", "readers", "0")
    r.cli("XREADGROUP", "GROUP", "readers", "alice", "COUNT", "1", "STREAMS", "stream", ">")
    r.cli("SET", "in3", "x", db=3)
    keyspace = r.cli("INFO", "keyspace")
    code, dumped = repo.mover("db-dump", "redis", r)
    assert code == 0, dumped
    doc = recorded(repo, dumped, "redis")
    counts = {d["name"]: d["tables"][0] for d in doc["databases"]}
    assert counts == {
        "0": {"table": "keys", "rows": 3014, "volatile": 2},
        "1": {"table": "keys", "rows": 1, "volatile": 1},
        "3": {"table": "keys", "rows": 1},
    }, keyspace
    assert "db0:keys=3014,expires=2" in keyspace

    # The drill's restore into the scratch server marks what it writes; the check compares
    # the key counts, runs the probes and flushes exactly those logical databases.
    suffix = uuid.uuid4().hex[:8]
    scratch_redis.cli("SET", "unrelated", "stays", db=7)
    code, restored = repo.mover(
        "db-restore", "redis", scratch_redis, db_files=files(dumped), db_scratch_suffix=suffix
    )
    assert code == 0, restored
    assert scratch_redis.cli("EXISTS", checks.redis_marker(suffix), db=3).strip() == "1"
    probes = repo.workdir / "probes.json"
    probes.write_text(
        checks.probes_json(
            [
                checks.PlannedProbe("size", "0", "0", "DBSIZE", "== 3014"),
                checks.PlannedProbe("str", "0", "0", "GET str", "== Grüße 🚀"),
                checks.PlannedProbe("missing", "3", "3", "GET nope", "!= NULL"),
                checks.PlannedProbe("writes", "3", "3", "DEL in3", "== 1"),
            ]
        )
    )
    code, verified = repo.mover(
        "db-verify",
        "redis",
        scratch_redis,
        db_files=files(dumped),
        db_scratch_suffix=suffix,
        db_probes_file=str(probes),
    )
    assert code == 0, verified
    assert (verified["passed"], verified["reason"]) == (False, "ProbeFailed"), verified
    outcomes = {p["name"]: (p["passed"], p["message"]) for p in verified["probes"]}
    assert outcomes["size"][0]
    assert outcomes["str"][0]
    assert outcomes["missing"] == (
        False,
        'probe missing: GET nope returned "NULL", expected != NULL',
    )
    assert outcomes["writes"] == (
        False,
        "probe writes: DEL in3: could not run: DEL is not a read-only command",
    )
    assert "row counts of 3 tables (3016 rows) match the backup's" in verified["counts"]
    assert verified["dropped"] == [f"drill_{suffix}"]
    left = scratch_redis.cli("INFO", "keyspace").split()
    assert left == ["#", "Keyspace", "db7:keys=1,expires=0,avg_ttl=0"]


def test_redis_scratch_server_holding_keys_is_never_flushed(
    redis_server: Redis, scratch_redis: Redis, repo: Repo
) -> None:
    """A scratch server whose logical databases hold keys is refused by the restore; the
    drill's check and drop then flush nothing (no marker was written)."""
    redis_server.cli("FLUSHALL")
    redis_server.cli("SET", "k", "v")
    code, dumped = repo.mover("db-dump", "redis", redis_server)
    assert code == 0, dumped
    scratch_redis.cli("SET", "precious", "data")
    suffix = uuid.uuid4().hex[:8]
    code, refused = repo.mover(
        "db-restore", "redis", scratch_redis, db_files=files(dumped), db_scratch_suffix=suffix
    )
    assert (code, refused["reason"]) == (1, "DatabaseExists")
    code, dropped = repo.mover(
        "db-drop", "redis", scratch_redis, db_drop=f"drill_{suffix}", db_scratch_suffix=suffix
    )
    assert (code, dropped["dropped"]) == (0, [f"drill_{suffix}"]), dropped
    assert scratch_redis.cli("GET", "precious").strip() == "data"
