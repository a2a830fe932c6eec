"""`safehold mover db-dump` and `safehold mover db-restore`: one database target per run.

Configuration comes only from the environment (see `safehold.contract.env`); the result is one
JSON document on stdout and in the termination message (`safehold.contract.result`).

Dump: every database becomes one restic snapshot holding one file (`postgresql/<db>.dump`,
`postgresql/globals.sql`, `mysql/<db>.sql`, `redis/dump.rdb`), streamed with
`restic backup --stdin-from-command`, so nothing touches the disk and a dump tool that exits
non-zero leaves no snapshot. When any database of the target fails, the snapshots this run
already made are forgotten as well, so a target is either wholly in the repository or not at
all; the run exits 1 with a specific reason.

Restore first waits (SAFEHOLD_DB_READY_TIMEOUT, default 300 s) until the target accepts
connections: the server it restores into was often created moments before, with the objects
of the same RestoreRequest.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

from safehold.api.errors import Failure
from safehold.contract import env as menv
from safehold.contract.result import Result
from safehold.movers import dbtools
from safehold.storage import restic
from safehold.storage.redact import redact


def _engine(db_type: str) -> ModuleType:
    if db_type == "postgresql":
        from safehold.movers import postgres

        return postgres
    if db_type == "mysql":
        from safehold.movers import mysql

        return mysql
    from safehold.movers import redis

    return redis


def _run(
    verb: str,
    environ: Mapping[str, str],
    action: Callable[[ModuleType, menv.DbConfig, restic.Repository, Result], None],
) -> Result:
    started = time.monotonic()
    result = Result(verb=verb)
    secrets: list[str] = []
    repo: restic.Repository | None = None
    try:
        cfg = menv.from_environment(environ)
        secrets.append(cfg.password)
        result.type, result.target, result.backup = cfg.type, cfg.target, cfg.backup
        repo = restic.repository_from_environment(environ)
        secrets += repo.secret_values
        action(_engine(cfg.type), cfg, repo, result)
        result.ok = True
    except Failure as err:  # the environment, the engine or restic
        result.reason, result.message = err.reason, err.message
    except Exception as err:
        result.reason, result.message = "MoverError", f"{type(err).__name__}: {err}"
    if not result.ok and verb == "db-dump" and repo is not None:
        _forget_partial(repo, result)
    result.message = redact(result.message, secrets)
    result.warnings = [redact(w, secrets) for w in result.warnings]
    result.durationSeconds = time.monotonic() - started
    return result


def _forget_partial(repo: restic.Repository, result: Result) -> None:
    ids = [d.snapshot for d in result.databases if d.snapshot]
    if not ids:
        return
    try:
        restic.forget(repo, ids)
    except restic.ResticError as err:
        # Through the operator's gateway a mover may not delete: the snapshots stay in the
        # result, and the operator forgets them.
        result.warnings.append(f"could not forget the snapshots of this run: {err.reason}")
        return
    result.warnings.append(f"forgot {len(ids)} snapshot(s) this failed run had made")
    result.databases = []
    result.bytesProcessed = result.bytesAdded = 0


def db_dump(environ: Mapping[str, str] = os.environ) -> int:
    result = _run("db-dump", environ, lambda m, c, r, res: m.dump(c, r, res))
    result.emit()
    return 0 if result.ok else 1


def _progress(cfg: menv.DbConfig, progress: Mapping[str, object]) -> None:
    """One progress line in the log (the operator reads the newest); never a secret."""
    doc = {k: redact(v, [cfg.password]) if isinstance(v, str) else v for k, v in progress.items()}
    print(json.dumps({"progress": doc}, separators=(",", ":"), ensure_ascii=False), flush=True)


def _restore(engine: ModuleType, cfg: menv.DbConfig, repo: restic.Repository, res: Result) -> None:
    with ThreadPoolExecutor(1) as side:
        # Finding the dumped files (a restic start) overlaps the wait for the server.
        listing = side.submit(dbtools.stored_files, cfg, repo)
        # A restore often starts right after the objects were applied: wait for the server.
        report = functools.partial(_progress, cfg)
        attempts, probed = dbtools.wait_until_ready(engine.probe, cfg, report=report)
        report({"phase": "restoring", "address": f"{cfg.host}:{cfg.port}"})
        if attempts > 1:
            res.warnings.append(f"the target accepted connections after {attempts} attempts")
        # Each engine restores the stored files into the server its probe just described.
        engine.restore(cfg, repo, res, listing.result(), probed)


def db_restore(environ: Mapping[str, str] = os.environ) -> int:
    result = _run("db-restore", environ, _restore)
    result.emit()
    return 0 if result.ok else 1
