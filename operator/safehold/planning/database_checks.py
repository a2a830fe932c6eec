"""The database check of a drill, its pure parts: scratch database names, probe
expectations, and what the check reports (no I/O).

A drill restores each dumped database into a scratch database of its own name,
`<database>_drill_<suffix>` (the suffix unique per drill), compares row counts and runs the
probes there, then drops it. Only names of that shape are ever dropped: the movers refuse
anything else. Redis has no named databases: a drill restores into a scratch server
(`check.host`) and marks each logical database it writes with the key
`safehold.io/drill:<suffix>`; only marked logical databases are ever flushed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from safehold.api.errors import Failure
from safehold.api.verification import DatabaseCheck, DatabaseProbe

SCRATCH_MARK = "_drill_"
NAME_LIMIT = 63  # bytes: PostgreSQL's NAMEDATALEN - 1; MySQL allows 64 characters
REDIS_MARKER_PREFIX = "safehold.io/drill:"
_SUFFIX = re.compile(r"^[a-z0-9]{1,16}$")
_SCRATCH = re.compile(r"(^|_)drill_[a-z0-9]{1,16}$")
NULL = "NULL"
"""How an SQL NULL (Redis: a nil reply) answer is compared: as this text."""
MAX_ANSWER = 200


class InvalidCheck(Failure):
    """A database check cannot run as configured."""


def check_suffix(suffix: str) -> str:
    if not _SUFFIX.match(suffix):
        raise InvalidCheck("InvalidScratchSuffix", f"{suffix!r} is not 1-16 of [a-z0-9]")
    return suffix


def scratch_name(original: str, suffix: str, limit: int = NAME_LIMIT) -> str:
    """`<original>_drill_<suffix>`, at most `limit` bytes: a long original is cut and a hash
    of it keeps two cut names apart."""
    tail = f"{SCRATCH_MARK}{check_suffix(suffix)}"
    name = f"{original}{tail}"
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(original.encode()).hexdigest()[:8]
    room = limit - len(tail.encode()) - len(digest) - 1
    head = original.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}{tail}"


def is_scratch_name(name: str) -> bool:
    """Whether `name` has the shape of a drill's scratch database (the only ones dropped)."""
    return bool(_SCRATCH.search(name))


def scratch_mapping(databases: Sequence[str], suffix: str) -> dict[str, str]:
    """Original database → its scratch database."""
    mapping = {db: scratch_name(db, suffix) for db in databases}
    if len(set(mapping.values())) != len(mapping):
        raise InvalidCheck("InvalidScratchSuffix", "two databases map to one scratch name")
    return mapping


def redis_marker(suffix: str) -> str:
    return f"{REDIS_MARKER_PREFIX}{check_suffix(suffix)}"


def redis_entry(suffix: str) -> str:
    """What a drill records for a Redis target: the marker of the logical databases it owns."""
    return f"drill_{check_suffix(suffix)}"


def entries(target: str, names: Sequence[str]) -> list[str]:
    """Scratch databases as a drill's status records them: `<target>/<name>`."""
    return [f"{target}/{n}" for n in names]


def names_of(target: str, recorded: Sequence[str]) -> list[str]:
    """The scratch names of `target` among recorded `<target>/<name>` entries."""
    prefix = f"{target}/"
    return [e[len(prefix) :] for e in recorded if e.startswith(prefix)]


# --------------------------------------------------------------------------- expectations
_EXPECT = re.compile(r"^\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*$", re.S)


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


@dataclass(frozen=True)
class Expectation:
    """`<op> <operand>`: a number compares as a number, anything else (or a quoted operand)
    as text. An SQL NULL or Redis nil answer is the text NULL."""

    op: str
    operand: str
    quoted: bool = False

    def __str__(self) -> str:
        operand = json.dumps(self.operand, ensure_ascii=False) if self.quoted else self.operand
        return f"{self.op} {operand}"

    def failure(self, answer: str | None) -> str | None:
        """None when `answer` meets the expectation, else what was wrong."""
        found = NULL if answer is None else answer.strip()
        want = None if self.quoted else _number(self.operand)
        if want is not None:
            got = _number(found)
            if got is None:
                return f"returned {shown(found)}, not a number; expected {self}"
            ok = _holds(self.op, got, want)
        else:
            ok = _holds(self.op, found, self.operand)
        return None if ok else f"returned {shown(found)}, expected {self}"


def _holds(op: str, left: Decimal | str, right: Decimal | str) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        pairs = {">=": left >= right, "<=": left <= right, ">": left > right, "<": left < right}
    else:
        a, b = str(left), str(right)
        pairs = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}
    return pairs[op]


def parse_expectation(text: str) -> Expectation:
    match = _EXPECT.match(text)
    if match is None or not match.group(2):
        raise InvalidCheck(
            "InvalidExpectation", f"{text!r} is not <op> <value> (op ==, !=, >=, <=, >, <)"
        )
    op, operand = match.group(1), match.group(2)
    if len(operand) >= 2 and operand[0] == operand[-1] and operand[0] in "\"'":
        return Expectation(op, operand[1:-1], quoted=True)
    return Expectation(op, operand)


def shown(answer: str, limit: int = MAX_ANSWER) -> str:
    """An answer as a message shows it: quoted, bounded."""
    text = answer if len(answer) <= limit else answer[:limit] + "…"
    return json.dumps(text, ensure_ascii=False)


# --------------------------------------------------------------------------- probes
@dataclass(frozen=True)
class PlannedProbe:
    name: str
    database: str
    """Where it runs: the scratch database (Redis: the logical database number)."""
    original: str
    """The backed-up database it stands for."""
    query: str
    expect: str

    def to_doc(self) -> dict[str, str]:
        return {
            "name": self.name,
            "database": self.database,
            "original": self.original,
            "query": self.query,
            "expect": self.expect,
        }


def plan_probes(
    probes: Sequence[DatabaseProbe], mapping: Mapping[str, str], db_type: str
) -> list[PlannedProbe]:
    """Each probe with the scratch database it runs in; InvalidCheck when a probe names a
    database the backup does not hold or its expectation does not parse."""
    planned = []
    first = next(iter(mapping), None)
    for probe in probes:
        parse_expectation(probe.expect)
        original = probe.database or ("0" if db_type == "redis" else first)
        if db_type == "redis":
            if original is None or not original.isdigit():
                raise InvalidCheck(
                    "InvalidProbe", f"probe {probe.name}: {original!r} is not a logical database"
                )
            planned.append(PlannedProbe(probe.name, original, original, probe.query, probe.expect))
            continue
        if original is None or original not in mapping:
            raise InvalidCheck(
                "InvalidProbe",
                f"probe {probe.name}: database {original!r} is not in the backup"
                f" (it has {', '.join(mapping) or 'none'})",
            )
        planned.append(
            PlannedProbe(probe.name, mapping[original], original, probe.query, probe.expect)
        )
    return planned


def probes_json(planned: Sequence[PlannedProbe]) -> str:
    return json.dumps([p.to_doc() for p in planned], separators=(",", ":"), ensure_ascii=False)


def parse_probes(raw: str) -> list[PlannedProbe]:
    """The probes file a db-verify mover reads (written by the operator)."""
    try:
        doc = json.loads(raw) if raw.strip() else []
    except ValueError:
        raise InvalidCheck("InvalidMoverEnvironment", "the probes file is not JSON") from None
    keys = ("name", "database", "original", "query", "expect")
    if not isinstance(doc, list) or not all(
        isinstance(p, dict) and all(isinstance(p.get(k), str) for k in keys) for p in doc
    ):
        raise InvalidCheck("InvalidMoverEnvironment", "the probes file is not a list of probes")
    return [PlannedProbe(*(str(p[k]) for k in keys)) for p in doc]


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ScratchPlan:
    """Where and under which names one dumped target is restored for its check."""

    target: str
    db_type: str
    mapping: Mapping[str, str]
    """Original database → scratch database (empty for Redis: the same logical numbers)."""
    names: tuple[str, ...]
    """What db-drop drops: the scratch names (Redis: the drill's marker entry)."""
    probes: tuple[PlannedProbe, ...]
    compare_row_counts: bool
    host: str | None
    port: int | None
    credentials_secret: str | None
    restore_accounts: bool
    """PostgreSQL on a scratch server: replay the roles first, as the dump names owners."""

    @property
    def entries(self) -> list[str]:
        """What the drill records before anything is created (`<target>/<name>`)."""
        return entries(self.target, self.names)


class Skip(InvalidCheck):
    """The check does not apply (reported Skipped, not Failed)."""


def plan_scratch(
    target: str,
    db_type: str,
    databases: Sequence[str],
    check: DatabaseCheck | None,
    suffix: str,
    original_known: bool,
) -> ScratchPlan:
    """The scratch plan of one dumped target. Skip when the check does not apply (Redis
    without a scratch server), InvalidCheck when it cannot run as configured."""
    settings = check or DatabaseCheck(target=target)
    if db_type == "redis" and not settings.host:
        raise Skip(
            "ScratchServerRequired",
            "a Redis target is checked only on a scratch server of its own: set host (and"
            " credentialsSecret) in the drill's databases.targets[] for it",
        )
    if not original_known and not settings.host:
        raise InvalidCheck(
            "TargetUnknown",
            "the backup does not say where this target lives; set host in the drill's"
            " databases.targets[]",
        )
    unmappable = [d for d in databases if "," in d or ":" in d] if db_type != "redis" else []
    if unmappable:
        raise InvalidCheck(
            "InvalidDatabaseMapping",
            f"databases with ',' or ':' in their names cannot be restored under another name:"
            f" {', '.join(unmappable)}",
        )
    mapping = {} if db_type == "redis" else scratch_mapping(databases, suffix)
    if db_type != "redis" and not mapping:
        raise Skip("NothingDumped", "the backup holds no database of this target")
    names = (redis_entry(suffix),) if db_type == "redis" else tuple(mapping.values())
    return ScratchPlan(
        target=target,
        db_type=db_type,
        mapping=mapping,
        names=names,
        probes=tuple(plan_probes(settings.probes, mapping, db_type)),
        compare_row_counts=settings.compare_row_counts,
        host=settings.host,
        port=settings.port,
        credentials_secret=settings.credentials_secret,
        restore_accounts=db_type == "postgresql" and bool(settings.host),
    )
