"""Pure parts of the drill's database check: expectations, scratch names, the scratch plan,
the recorded row counts (untrusted input) and their comparison, the RDB key walker, the
verify result's size."""

from __future__ import annotations

import io
import json
import struct

import pytest

from safehold.api.verification import DatabaseCheck, DatabaseProbe
from safehold.contract.result import MAX_TERMINATION_BYTES, ProbeOutcome, VerifyResult
from safehold.movers import rdb
from safehold.planning import database_checks as checks
from safehold.planning import rowcounts as rc
from safehold.planning.trust import Untrusted


@pytest.mark.parametrize(
    ("expect", "answer", "failure"),
    [
        (">= 1000", "5000", None),
        (">= 1000", " 1000\n", None),
        (">= 1000", "999", 'returned "999", expected >= 1000'),
        (">= 1000", "1e3", None),  # numbers compare as numbers
        ("== 1000", "1000.00", None),
        ("!= 0", "0", 'returned "0", expected != 0'),
        ("< 2.5", "2.49", None),
        (">= 1000", "many", 'returned "many", not a number; expected >= 1000'),
        (">= 1000", None, 'returned "NULL", not a number; expected >= 1000'),
        ("== ready", "ready", None),
        ("==ready", "Ready", 'returned "Ready", expected == ready'),
        ("== NULL", None, None),
        ("!= NULL", None, 'returned "NULL", expected != NULL'),
        ('== "42"', "42.0", 'returned "42.0", expected == "42"'),  # quoted: text
        ('== ""', "", None),
        ("> b", "c", None),  # text: lexicographic
        ("== Grüße", "Grüße", None),
    ],
)
def test_expectations(expect: str, answer: str | None, failure: str | None) -> None:
    assert checks.parse_expectation(expect).failure(answer) == failure


@pytest.mark.parametrize("bad", ["", "1000", "=> 5", "==", ">=   ", "~ x"])
def test_an_expectation_that_does_not_parse(bad: str) -> None:
    with pytest.raises(checks.InvalidCheck) as err:
        checks.parse_expectation(bad)
    assert err.value.reason == "InvalidExpectation"


def test_long_answers_are_shown_bounded() -> None:
    failure = checks.parse_expectation("== x").failure("y" * 1000)
    assert failure is not None
    assert len(failure) < 260
    assert failure.endswith('…", expected == x')


def test_scratch_names() -> None:
    assert checks.scratch_name("shop", "ab12") == "shop_drill_ab12"
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    name_a, name_b = checks.scratch_name(long_a, "ab12"), checks.scratch_name(long_b, "ab12")
    assert len(name_a.encode()) <= 63
    assert name_a != name_b
    assert name_a.endswith("_drill_ab12")
    umlauts = checks.scratch_name("ü" * 40, "s1")  # 80 bytes: cut on a character boundary
    assert len(umlauts.encode()) <= 63
    assert umlauts.startswith("ü")
    assert all(checks.is_scratch_name(n) for n in (name_a, umlauts, "drill_ab12"))
    assert not checks.is_scratch_name("shop")
    assert not checks.is_scratch_name("shop_drill_")
    assert not checks.is_scratch_name("shop_drill_AB")
    with pytest.raises(checks.InvalidCheck):
        checks.scratch_name("shop", "Not-OK")
    assert checks.names_of("main", ["main/a_drill_1", "other/b_drill_1", "main"]) == ["a_drill_1"]


def test_plan_on_the_original_server_and_on_a_scratch_server() -> None:
    probes = [
        DatabaseProbe(name="first", query="SELECT 1", expect="== 1"),
        DatabaseProbe(name="billing", database="billing", query="SELECT 2", expect="== 2"),
    ]
    check = DatabaseCheck(target="main", probes=probes)
    plan = checks.plan_scratch("main", "postgresql", ["orders", "billing"], check, "s1", True)
    assert dict(plan.mapping) == {"orders": "orders_drill_s1", "billing": "billing_drill_s1"}
    assert plan.entries == ["main/orders_drill_s1", "main/billing_drill_s1"]
    assert [(p.name, p.database, p.original) for p in plan.probes] == [
        ("first", "orders_drill_s1", "orders"),
        ("billing", "billing_drill_s1", "billing"),
    ]
    assert (plan.host, plan.restore_accounts, plan.compare_row_counts) == (None, False, True)
    other = DatabaseCheck(target="main", host="pg-scratch", compare_row_counts=False)
    plan = checks.plan_scratch("main", "postgresql", ["orders"], other, "s1", True)
    assert (plan.host, plan.restore_accounts, plan.compare_row_counts) == (
        "pg-scratch",
        True,
        False,
    )
    plan = checks.plan_scratch("main", "mysql", ["shop"], other, "s1", False)
    assert plan.restore_accounts is False  # MySQL accounts carry password hashes: not copied


def test_plans_that_do_not_apply_or_cannot_run() -> None:
    with pytest.raises(checks.Skip) as skipped:
        checks.plan_scratch("cache", "redis", ["rdb"], None, "s1", True)
    assert skipped.value.reason == "ScratchServerRequired"
    redis = checks.plan_scratch(
        "cache", "redis", ["rdb"], DatabaseCheck(target="cache", host="r"), "s1", True
    )
    assert (dict(redis.mapping), redis.entries) == ({}, ["cache/drill_s1"])
    with pytest.raises(checks.InvalidCheck) as comma:
        checks.plan_scratch("main", "postgresql", ["a,b"], None, "s1", True)
    assert comma.value.reason == "InvalidDatabaseMapping"
    with pytest.raises(checks.InvalidCheck) as unknown:
        checks.plan_scratch("main", "postgresql", ["a"], None, "s1", False)
    assert unknown.value.reason == "TargetUnknown"
    wrong = DatabaseCheck(
        target="main", probes=[DatabaseProbe(name="p", database="nope", query="x", expect="== 1")]
    )
    with pytest.raises(checks.InvalidCheck) as probe:
        checks.plan_scratch("main", "postgresql", ["a"], wrong, "s1", True)
    assert probe.value.reason == "InvalidProbe"
    assert probe.value.message == "probe p: database 'nope' is not in the backup (it has a)"


def _counts() -> rc.RowCounts:
    return rc.RowCounts(
        "mysql",
        (
            rc.DatabaseCounts(
                "shop",
                (
                    rc.TableCount("", "orders", 5000),
                    rc.TableCount("", "legacy", 2, exact=False),
                    rc.TableCount("", "gone", 7),
                ),
            ),
        ),
    )


def test_counts_round_trip_and_untrusted_documents() -> None:
    counts = _counts()
    assert rc.parse(rc.to_bytes(counts), "mysql") == counts
    doc = json.loads(rc.to_bytes(counts))

    def table(**fields: object) -> bytes:
        return json.dumps({**doc, "databases": [{"name": "x", "tables": [fields]}]}).encode()

    bad = [
        b"not json",
        json.dumps(doc | {"type": "postgresql"}).encode(),
        json.dumps(doc | {"format": 2}).encode(),
        json.dumps({**doc, "databases": [{"name": "", "tables": []}]}).encode(),
        table(table="t", rows=-1),
        table(table="t", rows=True),
        table(table="t\x00", rows=1),
        table(table="t", rows=1, volatile=2),
        table(table="t", rows=1, exact="yes"),
        b" " * (rc.MAX_COUNTS_BYTES + 1),
    ]
    for raw in bad:
        with pytest.raises(Untrusted) as err:
            rc.parse(raw, "mysql")
        assert err.value.reason == "RowCountsInvalid"


def test_comparison_fails_on_exact_tables_and_reports_approximate_ones() -> None:
    (recorded,) = _counts().databases
    found = [rc.TableCount("", "orders", 4990), rc.TableCount("", "legacy", 3)]
    result = rc.compare_database(recorded, found)
    assert (result.tables, result.rows, result.approximate_tables) == (2, 5007, 1)
    assert [d.describe() for d in result.mismatches] == [
        "shop: orders: 5000 rows at backup time, 4990 restored",
        "shop: gone: 7 rows at backup time, missing after the restore",
    ]
    assert rc.describe(result) == (
        "row counts differ in 2 of 2 tables: shop: orders: 5000 rows at backup time, 4990"
        " restored; shop: gone: 7 rows at backup time, missing after the restore; 1 tables"
        " recorded approximately (not compared exactly), 1 of them differ: shop: legacy: 2"
        " rows at backup time, 3 restored"
    )
    same = [
        rc.TableCount("", name, rows) for name, rows in (("orders", 5000), ("gone", 7), ("x", 1))
    ]
    assert rc.compare_database(recorded, same).mismatches == ()


def test_redis_keys_with_a_ttl_may_expire_others_not() -> None:
    recorded = rc.DatabaseCounts("0", (rc.TableCount("", "keys", 100, volatile=10),))
    expired_three = [rc.TableCount("", "keys", 97, volatile=7)]
    result = rc.compare_database(recorded, expired_three)
    assert (result.mismatches, result.volatile) == ((), 3)
    assert rc.describe(result).endswith("; 3 keys with a TTL had expired")
    lost_persistent = [rc.TableCount("", "keys", 97, volatile=10)]
    assert len(rc.compare_database(recorded, lost_persistent).mismatches) == 1
    # A logical database whose keys all had a TTL may be gone entirely.
    all_volatile = rc.DatabaseCounts("1", (rc.TableCount("", "keys", 2, volatile=2),))
    nothing = rc.compare_database(all_volatile, [rc.TableCount("", "keys", 0)])
    assert (nothing.mismatches, nothing.volatile) == ((), 2)


def test_a_verify_result_always_fits_the_termination_message() -> None:
    result = VerifyResult(
        verb="db-verify",
        ok=True,
        message="m" * 5000,
        counts="c" * 3000,
        probes=[ProbeOutcome(f"probe-{i}", False, "x" * 4000) for i in range(32)],
        dropped=[f"db{i}_drill_s1" for i in range(40)],
        warnings=["w" * 3000] * 5,
    )
    text = result.termination_json()
    assert len(text.encode()) <= MAX_TERMINATION_BYTES
    assert json.loads(text)["truncated"] is True
    back = VerifyResult.from_doc(json.loads(text))
    assert back.ok is True
    assert back.probes[0].name == "probe-0"


# ----------------------------------------------------------------------------- the RDB walker
def _string(data: bytes) -> bytes:
    assert len(data) < 64
    return bytes([len(data)]) + data


def _rdb(*body: bytes, version: bytes = b"0010") -> bytes:
    return b"REDIS" + version + b"".join(body) + b"\xff" + b"\x00" * 8


AUX = b"\xfa" + _string(b"redis-ver") + _string(b"7.0.15")
SYNTHETIC = _rdb(
    AUX,
    b"\xfe\x00\xfb\x03\x01",  # SELECTDB 0, RESIZEDB 3 1
    b"\x00" + _string(b"plain") + _string(b"value"),
    b"\xfc" + struct.pack("<Q", 1_900_000_000_000) + b"\x00" + _string(b"ttl") + b"\xc0\x07",
    b"\x00" + _string(b"lzf") + b"\xc3\x03\x0a" + b"abc",  # LZF: 3 bytes, 10 when expanded
    b"\xfe\x02",  # SELECTDB 2
    b"\x01" + _string(b"list") + b"\x02" + _string(b"a") + b"\xc1\x01\x00",  # two elements
    b"\xf8\x05\x0b" + _string(b"intset") + _string(b"\x02\x00\x00\x00\x01\x00\x00\x00\x01\x00"),
)


def test_the_walker_counts_keys_per_database_and_passes_the_stream_through() -> None:
    out = io.BytesIO()
    counts = rdb.relay(io.BytesIO(SYNTHETIC), out)
    assert counts == {0: [3, 1], 2: [2, 0]}
    assert out.getvalue() == SYNTHETIC


@pytest.mark.parametrize(
    "stream",
    [
        _rdb(b"\xfe\x00", b"\x06" + _string(b"module-v1") + b"\x00"),  # a pre-GA module type
        _rdb(AUX, version=b"0012"),  # newer than the walker knows
        SYNTHETIC[:-20],  # cut short
        b"not an rdb at all",
    ],
)
def test_what_the_walker_does_not_know_passes_through_uncounted(stream: bytes) -> None:
    out = io.BytesIO()
    assert rdb.relay(io.BytesIO(stream), out) is None
    assert out.getvalue() == stream
