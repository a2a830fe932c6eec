"""Row counts recorded with a database dump, and their comparison with a restored copy (pure).

At dump time the mover counts the rows of every table (Redis: the keys of every logical
database of the dumped RDB) and stores the counts as one small JSON file beside the dumps, in
the same restic repository (`<engine>/counts.json`, listed in the target's `files`). A drill
reads it back from the repository, so the counts are as trustworthy as the dump itself, but
they are still parsed as untrusted input: sizes and shapes are bounded and checked here.

Exactness. PostgreSQL counts are taken in the very snapshot `pg_dump` reads (an exported
snapshot): exact. MySQL/MariaDB counts are taken in a consistent snapshot of their own,
opened just before the dump's; they are marked exact only when InnoDB's transaction counter
did not move between that snapshot and the end of the dump (no write committed in between),
and only for InnoDB tables. Redis counts come from the RDB stream itself: exact, except that
keys with a TTL may expire before a restore (`volatile`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safehold.planning.trust import Untrusted

FORMAT = 1
COUNTS_NAME = "counts.json"
PREFIXES = {"postgresql": "postgresql", "mysql": "mysql", "redis": "redis"}
MAX_COUNTS_BYTES = 32 * 1024 * 1024
MAX_DATABASES = 10_000
MAX_TABLES = 500_000
MAX_NAME = 1024
MAX_ROWS = 2**63 - 1
MAX_LISTED = 5  # mismatches named in a message


def counts_file(db_type: str) -> str:
    """Path of the counts file of an engine's dump inside its snapshot."""
    return f"{PREFIXES[db_type]}/{COUNTS_NAME}"


def is_counts_file(path: str) -> bool:
    return path in {counts_file(t) for t in PREFIXES}


@dataclass(frozen=True)
class TableCount:
    """Rows of one table (Redis: keys of one logical database, `table` = "keys")."""

    schema: str
    table: str
    rows: int
    exact: bool = True
    volatile: int = 0
    """Of the rows, those that may be gone by the time of a restore (Redis keys with a TTL)."""

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True)
class DatabaseCounts:
    name: str
    tables: tuple[TableCount, ...]
    exact: bool = True
    note: str = ""
    """Why the counts are not exact, when they are not."""


@dataclass(frozen=True)
class RowCounts:
    type: str
    databases: tuple[DatabaseCounts, ...] = ()

    def database(self, name: str) -> DatabaseCounts | None:
        return next((d for d in self.databases if d.name == name), None)


def _table_doc(t: TableCount) -> dict[str, Any]:
    doc: dict[str, Any] = {"table": t.table, "rows": t.rows}
    if t.schema:
        doc["schema"] = t.schema
    if not t.exact:
        doc["exact"] = False
    if t.volatile:
        doc["volatile"] = t.volatile
    return doc


def to_bytes(counts: RowCounts) -> bytes:
    doc = {
        "format": FORMAT,
        "type": counts.type,
        "databases": [
            {"name": d.name, "exact": d.exact, "tables": [_table_doc(t) for t in d.tables]}
            | ({"note": d.note} if d.note else {})
            for d in counts.databases
        ],
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _bad(what: str) -> Untrusted:
    return Untrusted("RowCountsInvalid", f"the recorded row counts are invalid: {what}")


def _name(value: object, what: str, empty: bool = False) -> str:
    ok = isinstance(value, str) and (empty or value) and len(value) <= MAX_NAME
    if not ok or "\x00" in str(value):
        raise _bad(f"{what} is not a name")
    return str(value)


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ROWS:
        raise _bad(f"{what} is not a row count")
    return value


def _table(doc: object) -> TableCount:
    if not isinstance(doc, dict):
        raise _bad("a table entry is not an object")
    table = _name(doc.get("table"), "a table")
    rows = _count(doc.get("rows"), f"rows of {table}")
    volatile = _count(doc.get("volatile", 0), f"volatile rows of {table}")
    exact = doc.get("exact", True)
    if not isinstance(exact, bool) or volatile > rows:
        raise _bad(f"table {table}")
    return TableCount(_name(doc.get("schema", ""), "a schema", True), table, rows, exact, volatile)


def _database(doc: object, budget: list[int]) -> DatabaseCounts:
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), list):
        raise _bad("a database entry is not an object with tables")
    budget[0] -= len(doc["tables"])
    if budget[0] < 0:
        raise _bad(f"more than {MAX_TABLES} tables")
    exact, note = doc.get("exact", True), doc.get("note", "")
    if not isinstance(exact, bool) or not isinstance(note, str):
        raise _bad("a database entry")
    tables = tuple(_table(t) for t in doc["tables"])
    return DatabaseCounts(_name(doc.get("name"), "a database"), tables, exact, note[:500])


def parse(raw: bytes, db_type: str) -> RowCounts:
    """The counts file as read back from the repository; Untrusted when it is not what a
    mover of `db_type` wrote."""
    if len(raw) > MAX_COUNTS_BYTES:
        raise _bad(f"larger than {MAX_COUNTS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _bad("not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("type") != db_type:
        raise _bad(f"not a format {FORMAT} document of a {db_type} dump")
    databases = doc.get("databases")
    if not isinstance(databases, list) or len(databases) > MAX_DATABASES:
        raise _bad("no list of databases")
    budget = [MAX_TABLES]
    return RowCounts(db_type, tuple(_database(d, budget) for d in databases))


@dataclass(frozen=True)
class Difference:
    database: str
    table: str
    recorded: int | None
    """None: the table was not there at backup time."""
    found: int | None
    """None: the table is missing in the restored copy."""
    exact: bool

    def describe(self) -> str:
        where = f"{self.database}: {self.table}"
        if self.found is None:
            return f"{where}: {self.recorded} rows at backup time, missing after the restore"
        return f"{where}: {self.recorded} rows at backup time, {self.found} restored"


@dataclass(frozen=True)
class Comparison:
    tables: int = 0
    """Tables compared exactly."""
    rows: int = 0
    """Rows in those tables, as recorded."""
    mismatches: tuple[Difference, ...] = ()
    """Differences in exactly recorded tables: the check fails."""
    approximate: tuple[Difference, ...] = ()
    """Differences in approximately recorded tables: reported, not failed."""
    approximate_tables: int = 0
    volatile: int = 0
    """Keys with a TTL at backup time that were gone after the restore (Redis)."""
    notes: tuple[str, ...] = field(default_factory=tuple)


def _same(rec: TableCount, found: TableCount) -> tuple[bool, int]:
    """Whether a restored table matches its record, and how many volatile rows it lost."""
    if not rec.volatile:
        return found.rows == rec.rows, 0
    persistent = rec.rows - rec.volatile
    lost = rec.volatile - found.volatile
    return found.rows - found.volatile == persistent and lost >= 0, max(lost, 0)


def compare_database(
    recorded: DatabaseCounts, found: Iterable[TableCount], shown_as: str | None = None
) -> Comparison:
    """Compare one database's recorded counts with the counts of its restored copy. Tables
    the copy has beyond the record (an extension's) are not compared."""
    have = {(t.schema, t.table): t for t in found}
    name = shown_as or recorded.name
    exact: list[Difference] = []
    approx: list[Difference] = []
    tables = rows = approx_tables = volatile = 0
    for rec in recorded.tables:
        got = have.get((rec.schema, rec.table))
        is_exact = rec.exact and recorded.exact
        same, lost = _same(rec, got) if got is not None else (False, 0)
        if is_exact:
            tables, rows, volatile = tables + 1, rows + rec.rows, volatile + lost
        else:
            approx_tables += 1
        if not same:
            diff = Difference(name, rec.label, rec.rows, got.rows if got else None, is_exact)
            (exact if is_exact else approx).append(diff)
    notes = (f"{name}: {recorded.note}",) if recorded.note else ()
    return Comparison(tables, rows, tuple(exact), tuple(approx), approx_tables, volatile, notes)


def combine(parts: Sequence[Comparison]) -> Comparison:
    return Comparison(
        tables=sum(p.tables for p in parts),
        rows=sum(p.rows for p in parts),
        mismatches=tuple(d for p in parts for d in p.mismatches),
        approximate=tuple(d for p in parts for d in p.approximate),
        approximate_tables=sum(p.approximate_tables for p in parts),
        volatile=sum(p.volatile for p in parts),
        notes=tuple(n for p in parts for n in p.notes),
    )


def missing_database(recorded: DatabaseCounts, shown_as: str | None = None) -> Comparison:
    """A recorded database of which nothing was restored: every table differs."""
    return compare_database(recorded, (), shown_as)


def describe(comparison: Comparison) -> str:
    """One sentence about a comparison, naming at most a few differences."""
    c = comparison
    if c.mismatches:
        listed = "; ".join(d.describe() for d in c.mismatches[:MAX_LISTED])
        more = (
            f" (and {len(c.mismatches) - MAX_LISTED} more)"
            if len(c.mismatches) > MAX_LISTED
            else ""
        )
        text = f"row counts differ in {len(c.mismatches)} of {c.tables} tables: {listed}{more}"
    else:
        text = f"row counts of {c.tables} tables ({c.rows} rows) match the backup's"
    if c.volatile:
        text += f"; {c.volatile} keys with a TTL had expired"
    if c.approximate_tables:
        text += f"; {c.approximate_tables} tables recorded approximately (not compared exactly)" + (
            f", {len(c.approximate)} of them differ" if c.approximate else ""
        )
        if c.approximate:
            text += ": " + "; ".join(d.describe() for d in c.approximate[:MAX_LISTED])
    if c.notes:
        text += "; " + "; ".join(c.notes[:2])
    return text


def summary(counts: RowCounts) -> Mapping[str, int]:
    """Tables and rows recorded, for a mover's result."""
    tables = [t for d in counts.databases for t in d.tables]
    return {"tables": len(tables), "rows": sum(t.rows for t in tables)}
