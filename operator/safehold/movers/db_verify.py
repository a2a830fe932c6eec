"""`safehold mover db-verify` and `safehold mover db-drop`: the database check of a drill.

db-verify runs once a drill restored a target into scratch databases
(SAFEHOLD_DB_MAPPING `original:scratch`; Redis: the logical databases of a scratch server its
restore marked). It compares each scratch database's row counts (Redis: key counts) with
those recorded at backup time, the counts file among SAFEHOLD_DB_FILES read from the
repository; runs the probes (SAFEHOLD_DB_PROBES_FILE); and drops the scratch databases in
every case, also when a comparison failed. A failed comparison is a result (`passed`
false, `reason` RowCountMismatch or ProbeFailed), not a failed mover.

db-drop drops the scratch databases named by SAFEHOLD_DB_DROP: what a drill killed mid-way
left behind. Both drop nothing but names of a drill's shape (`<db>_drill_<suffix>`; Redis:
logical databases holding the drill's marker).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from safehold.api.errors import Failure
from safehold.contract import env as menv
from safehold.contract.result import (
    PROBE_FAILED,
    ROW_COUNT_MISMATCH,
    ProbeOutcome,
    VerifyResult,
)
from safehold.movers import db_checks, dbtools, redis
from safehold.planning import database_checks as checks
from safehold.planning import rowcounts
from safehold.planning.trust import Untrusted
from safehold.storage import restic
from safehold.storage.redact import redact

MAX_QUERY_SHOWN = 120


def _secrets(environ: Mapping[str, str]) -> list[str]:
    if not environ.get("RESTIC_REPOSITORY"):
        return []
    return list(restic.repository_from_environment(environ).secret_values)


def _run(
    verb: str,
    environ: Mapping[str, str],
    action: Callable[[menv.DbConfig, Mapping[str, str], VerifyResult], None],
) -> VerifyResult:
    started = time.monotonic()
    result = VerifyResult(verb=verb)
    secrets = _secrets(environ)
    try:
        cfg = menv.from_environment(environ)
        secrets.append(cfg.password)
        result.type, result.target, result.backup = cfg.type, cfg.target, cfg.backup
        if not cfg.scratch_suffix:
            raise menv.ConfigError(f"{menv.DB_SCRATCH_SUFFIX} is not set")
        action(cfg, environ, result)
        result.ok = True
    except Failure as err:
        result.reason, result.message = err.reason, err.message
    except Exception as err:
        result.reason, result.message = "MoverError", f"{type(err).__name__}: {err}"
    result.message = redact(result.message, secrets)
    result.counts = redact(result.counts, secrets)
    result.warnings = [redact(w, secrets) for w in result.warnings]
    for probe in result.probes:
        probe.message = redact(probe.message, secrets)
    result.durationSeconds = time.monotonic() - started
    return result


def db_verify(environ: Mapping[str, str] = os.environ) -> int:
    result = _run("db-verify", environ, _verify)
    result.emit()
    return 0 if result.ok else 1


def db_drop(environ: Mapping[str, str] = os.environ) -> int:
    result = _run("db-drop", environ, _drop)
    result.emit()
    return 0 if result.ok else 1


def _drop(cfg: menv.DbConfig, environ: Mapping[str, str], result: VerifyResult) -> None:
    result.dropped, result.leftover = db_checks.ENGINES[cfg.type].drop(cfg, cfg.drop)
    result.passed = not result.leftover


def _scratch_names(cfg: menv.DbConfig) -> list[str]:
    """The scratch databases of this drill (SQL engines): every mapped name must be one."""
    tail = f"{checks.SCRATCH_MARK}{cfg.scratch_suffix}"
    names = list(cfg.mapping.values())
    wrong = [n for n in names if not n.endswith(tail)]
    if wrong or not names:
        raise menv.ConfigError(
            f"{menv.DB_MAPPING} must map every database to a scratch name ending in {tail}"
        )
    return names


def _verify(cfg: menv.DbConfig, environ: Mapping[str, str], result: VerifyResult) -> None:
    engine = db_checks.ENGINES[cfg.type]
    dbtools.wait_until_ready(engine.probe, cfg)
    if cfg.type == "redis":
        marker = checks.redis_marker(cfg.scratch_suffix)
        owned = [str(db) for db in db_checks.marked(cfg, marker)]
        db_checks.unmark(cfg, marker, [int(db) for db in owned])
        pairs = {db: db for db in owned}
    else:
        owned = _scratch_names(cfg)
        pairs = dict(cfg.mapping)
    try:
        comparison = _compare(cfg, environ, engine, pairs, result) if cfg.verify_counts else None
        outcomes = [_probe(cfg, engine, p, set(pairs.values())) for p in _probes(cfg)]
        _judge(cfg, result, comparison, outcomes)
    finally:
        _drop_owned(cfg, engine, owned, result)


def _drop_owned(
    cfg: menv.DbConfig, engine: db_checks.Engine, owned: Sequence[str], result: VerifyResult
) -> None:
    if cfg.type != "redis":
        result.dropped, result.leftover = engine.drop(cfg, owned)
        return
    entry = checks.redis_entry(cfg.scratch_suffix)
    try:
        db_checks.flush_marked(cfg, [int(db) for db in owned])
    except (Failure, OSError, redis.RespError) as err:
        result.leftover = [f"{entry}: logical databases {', '.join(owned)}: {err}"]
        return
    result.dropped = [entry]


def _recorded(cfg: menv.DbConfig, environ: Mapping[str, str]) -> rowcounts.RowCounts | None:
    """The counts recorded at backup time, read from the repository (None: not recorded)."""
    path = rowcounts.counts_file(cfg.type)
    if path not in cfg.files:
        return None
    snapshot, size = cfg.files[path]
    if size > rowcounts.MAX_COUNTS_BYTES:
        raise Untrusted("RowCountsInvalid", f"the recorded row counts are {size} bytes")
    repo = restic.repository_from_environment(environ)
    with tempfile.TemporaryDirectory(dir=cfg.scratch_dir, prefix="safehold-counts-") as tmp:
        file = Path(tmp) / "counts.json"
        with file.open("wb") as fh:
            restic.dump_file(repo, snapshot, "/" + path, fh)
        if file.stat().st_size > rowcounts.MAX_COUNTS_BYTES:
            raise Untrusted("RowCountsInvalid", "the recorded row counts are too large")
        return rowcounts.parse(file.read_bytes(), cfg.type)


def _compare(
    cfg: menv.DbConfig,
    environ: Mapping[str, str],
    engine: db_checks.Engine,
    pairs: Mapping[str, str],
    result: VerifyResult,
) -> rowcounts.Comparison | None:
    recorded = _recorded(cfg, environ)
    if recorded is None:
        return None
    parts = []
    for rec in recorded.databases:
        scratch = pairs.get(rec.name)
        if scratch is None and cfg.type == "redis":
            # Nothing written there: every key of it had expired by the restore, or not.
            parts.append(rowcounts.compare_database(rec, [rowcounts.TableCount("", "keys", 0)]))
            continue
        if scratch is None:
            parts.append(rowcounts.missing_database(rec))
            continue
        found, error = engine.count(cfg, scratch)
        if error:
            result.warnings.append(f"{rec.name}: some tables could not be counted: {error}")
        parts.append(rowcounts.compare_database(rec, found))
    return rowcounts.combine(parts)


def _probes(cfg: menv.DbConfig) -> list[checks.PlannedProbe]:
    if not cfg.probes_file:
        return []
    try:
        raw = Path(cfg.probes_file).read_text()
    except OSError as err:
        raise menv.ConfigError(f"{menv.DB_PROBES_FILE}: {err.strerror}") from None
    return checks.parse_probes(raw)


def _query(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_QUERY_SHOWN else flat[:MAX_QUERY_SHOWN] + "…"


def _probe(
    cfg: menv.DbConfig,
    engine: db_checks.Engine,
    probe: checks.PlannedProbe,
    restored: set[str],
) -> ProbeOutcome:
    head = f"probe {probe.name}: {_query(probe.query)}"
    if probe.database not in restored:
        return ProbeOutcome(probe.name, False, f"{head}: {probe.original} was not restored")
    expectation = checks.parse_expectation(probe.expect)
    try:
        answer = engine.answer(cfg, probe.database, probe.query)
    except db_checks.ProbeError as err:
        return ProbeOutcome(probe.name, False, f"{head}: could not run: {err}")
    why = expectation.failure(answer)
    if why is not None:
        return ProbeOutcome(probe.name, False, f"{head} {why}")
    shown = checks.shown(checks.NULL if answer is None else answer.strip())
    return ProbeOutcome(probe.name, True, f"{head} returned {shown} ({expectation})")


def _judge(
    cfg: menv.DbConfig,
    result: VerifyResult,
    comparison: rowcounts.Comparison | None,
    outcomes: Sequence[ProbeOutcome],
) -> None:
    result.probes = list(outcomes)
    if comparison is None:
        result.counts = (
            "row counts not compared"
            if not cfg.verify_counts
            else "no row counts were recorded at backup time, none compared"
        )
    else:
        result.counts = rowcounts.describe(comparison)
        result.tables, result.rows = comparison.tables, comparison.rows
    failed = [o for o in outcomes if not o.passed]
    if comparison is not None and comparison.mismatches:
        result.reason = ROW_COUNT_MISMATCH
    elif failed:
        result.reason = PROBE_FAILED
    result.passed = not result.reason
    probes = "; ".join(o.message for o in failed[:3])
    if result.reason == ROW_COUNT_MISMATCH:
        result.message = result.counts + (f"; {probes}" if probes else "")
    elif failed:
        result.message = f"{probes}; {result.counts}"
    else:
        names = ", ".join(o.name for o in outcomes)
        result.message = result.counts + (f"; probes passed: {names}" if outcomes else "")
