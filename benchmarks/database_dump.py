"""Benchmark: PostgreSQL dump into the repository and restore, against local baselines.

Runs a real PostgreSQL and SeaweedFS on 127.0.0.1 (tools/localcluster/databases.py) and
prints, side by side in one run, on the same database:
- Safehold's dump (`safehold mover db-dump`: pg_dump -Fc -Z0 streamed into restic) vs
  `pg_dump -Fc -Z1` to a local file, and vs plain `pg_dump | zstd -1` (goal: within 1.2x of
  the latter);
- a second dump of the unchanged database: bytes added to the repository (goal: < 10 % of the
  first);
- `safehold mover db-restore` (streamed, one job; and with SAFEHOLD_PG_RESTORE_JOBS=2) vs
  `pg_restore -j2` from the local file (goal: within 1.3x). The mover is given the dumped files
  as the operator gives them (SAFEHOLD_DB_FILES, from the Backup's status). Baseline and mover
  alternate twice, each after a CHECKPOINT with its target dropped; the best of each counts.

Side by side, to show where the time goes: `pg_dump -Fc -Z0` alone (to /dev/null), restic
alone storing the same custom-format stream read from a local file (`restic backup --stdin`
with the mover's compression level, a fresh repository, so no deduplication helps it), the
mover's fixed cost (an empty database),
and for the restore `restic dump` alone (to /dev/null) and a streamed single-job `pg_restore`
from the local file.

Usage: python benchmarks/database_dump.py [--size-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from localcluster.databases import PG_BIN, PostgreSQL, S3Store, restic
from safehold.contract.env import encode_files
from safehold.storage.restic import STREAM_COMPRESSION


@dataclass(frozen=True)
class Measured:
    """Wall time, and CPU time (user + system) of the client processes it waited for: the
    dump/restore tools, restic and the mover, not the PostgreSQL server. CPU time hardly
    depends on what else the machine runs, wall time does."""

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:.1f} s (cpu {self.cpu:.1f} s)"

    def __truediv__(self, other: Measured) -> str:
        return f"{self.wall / other.wall:.2f}x wall, {self.cpu / other.cpu:.2f}x cpu"


ROUNDS = 2  # restores: baseline and Safehold alternate; the best of each counts


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def timed(fn: Any) -> tuple[Measured, Any]:
    start, cpu = time.monotonic(), _children_cpu()
    value = fn()
    return Measured(time.monotonic() - start, _children_cpu() - cpu), value


def mover(verb: str, pg: PostgreSQL, repo_env: dict[str, str], **extra: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="safehold-dbbench-"))
    pw = workdir / "pw"
    pw.write_text(pg.password)
    env = (
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "SAFEHOLD_DB_TYPE": "postgresql",
            "SAFEHOLD_DB_HOST": pg.host,
            "SAFEHOLD_DB_PORT": str(pg.port),
            "SAFEHOLD_DB_USER": pg.user,
            "SAFEHOLD_DB_PASSWORD_FILE": str(pw),
            "SAFEHOLD_BACKUP": "bench/run",
            "SAFEHOLD_TARGET": "pg",
            "SAFEHOLD_DB_DATABASES": "bench",
            "SAFEHOLD_PG_GLOBALS": "false",
            "SAFEHOLD_TERMINATION_LOG": str(workdir / "term"),
            "SAFEHOLD_SCRATCH_DIR": str(workdir),
        }
        | repo_env
        | {f"SAFEHOLD_{k.upper()}": v for k, v in extra.items()}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "safehold", "mover", verb],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    subprocess.run(["rm", "-rf", str(workdir)], check=False)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"{verb} failed: {result}")
    return result


def shell(cmd: str, pg: PostgreSQL, database: str = "bench") -> Measured:
    argv = ["bash", "-o", "pipefail", "-c", cmd]
    return timed(lambda: subprocess.run(argv, env=pg.env(database), check=True))[0]


def restic_shell(repo_env: dict[str, str], args: str) -> str:
    """A shell command running restic against `repo_env`'s repository (env, then restic)."""
    env = dict(repo_env)
    options = env.pop("SAFEHOLD_RESTIC_OPTIONS")
    binary = env.pop("SAFEHOLD_RESTIC")
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    return f"env {exports} {binary} {options} {args}"


def populate(pg: PostgreSQL, size_mb: int) -> str:
    rows = size_mb * 1_000_000 // 180
    pg.psql("CREATE DATABASE bench;")
    pg.psql(
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, kind text, payload text,"
        " amount numeric(12,2));\n"
        "INSERT INTO events SELECT g, '2026-01-01'::timestamptz + g * interval '1 second',"
        " (ARRAY['click','view','buy','login'])[1 + g % 4],"
        " md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || md5((g * 13)::text),"
        f" (g % 100000) / 100.0 FROM generate_series(1, {rows}) g;\n"
        "CREATE INDEX events_at ON events (at);\n"
        "VACUUM ANALYZE events;\n",
        "bench",
        timeout=3600,
    )
    return pg.psql("SELECT pg_size_pretty(pg_database_size('bench'))").strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="approximate table data size")
    args = parser.parse_args()
    load = os.getloadavg()
    pg = PostgreSQL().start()
    s3 = S3Store().start()
    work = Path(tempfile.mkdtemp(prefix="safehold-dbbench-files-"))
    try:
        size = populate(pg, args.size_mb)
        repo_env = s3.restic_env("bench")
        restic(repo_env, "init")
        fc = work / "bench.dump"
        pg_dump = PG_BIN / "pg_dump"
        t_fc = shell(f"{pg_dump} -Fc -Z1 -f {fc}", pg)
        t_zstd = shell(f"{pg_dump} | zstd -1 -q -o {work / 'bench.sql.zst'}", pg)
        t_z0 = shell(f"{pg_dump} -Fc -Z0 > /dev/null", pg)
        z0 = work / "bench-z0.dump"
        shell(f"{pg_dump} -Fc -Z0 -f {z0}", pg)
        alone_env = s3.restic_env("bench-restic-alone")
        restic(alone_env, "init")
        store = (
            f"backup --stdin --stdin-filename bench.dump --quiet --compression {STREAM_COMPRESSION}"
        )
        t_alone = shell(f"{restic_shell(alone_env, store)} < {z0}", pg)
        t_first, first = timed(lambda: mover("db-dump", pg, repo_env))
        t_second, second = timed(lambda: mover("db-dump", pg, repo_env))
        pg.psql("CREATE DATABASE empty;")
        t_empty, _ = timed(lambda: mover("db-dump", pg, repo_env, db_databases="empty"))
        # The files as the operator names them from the Backup's status (no listing).
        named = encode_files(
            {d["file"]: (d["snapshot"], d["bytesProcessed"]) for d in first["databases"]}
        )

        def fresh(database: str) -> None:
            # Every restore starts from the same server state: its target gone and the dirty
            # buffers of the previous one written out.
            pg.psql(f"DROP DATABASE IF EXISTS {database}; CHECKPOINT;")

        def local_restore() -> Measured:
            fresh("bench_local")
            restore_cmd = f"{PG_BIN / 'pg_restore'} -j2 -d bench_local {fc}"
            return shell(f"{PG_BIN / 'createdb'} bench_local && {restore_cmd}", pg, "postgres")

        def safehold_restore(**extra: str) -> Measured:
            fresh("bench_stream")
            return timed(
                lambda: mover("db-restore", pg, repo_env, db_mapping="bench:bench_stream", **extra)
            )[0]

        # Baseline and Safehold alternate, ROUNDS times; the best of each is reported.
        t_local = t_restore = Measured(float("inf"), 0)
        for _ in range(ROUNDS):
            t_local = min(t_local, local_restore(), key=lambda m: m.wall)
            t_restore = min(t_restore, safehold_restore(db_files=named), key=lambda m: m.wall)
        fresh("bench_stream_local")
        stream_cmd = f"{PG_BIN / 'pg_restore'} --single-transaction -d bench_stream_local"
        t_local_stream = shell(
            f"{PG_BIN / 'createdb'} bench_stream_local && {stream_cmd} < {z0}", pg, "postgres"
        )
        t_read = shell(f"{restic_shell(alone_env, 'dump latest /bench.dump')} > /dev/null", pg)
        t_restore_j2 = safehold_restore(db_files=named, pg_restore_jobs="2")
        mib = 1024 * 1024
        fc_mib = fc.stat().st_size / mib
        zst_mib = (work / "bench.sql.zst").stat().st_size / mib
        added = 100 * second["bytesAdded"] / first["bytesAdded"]
        rows = [
            ("database size", size, ""),
            ("pg_dump -Fc -Z1 to a local file", f"{t_fc}; {fc_mib:.0f} MiB", ""),
            ("pg_dump | zstd -1 (baseline)", f"{t_zstd}; {zst_mib:.0f} MiB", ""),
            ("pg_dump -Fc -Z0 to /dev/null (the dump tool alone)", f"{t_z0}", ""),
            (
                "restic alone: the same -Fc -Z0 stream from a local file, `backup --stdin`",
                f"{t_alone} = {t_alone / t_zstd} of zstd",
                "",
            ),
            (
                "Safehold dump into the repository",
                f"{t_first} = **{t_first / t_zstd}** of zstd; {t_first / t_alone} of restic"
                f" alone; {first['bytesProcessed'] / mib:.0f} MiB dumped",
                "<= 1.2x zstd",
            ),
            ("Safehold dump of an empty database (fixed cost per run)", f"{t_empty}", ""),
            (
                "second dump, database unchanged",
                f"{t_second}; {second['bytesAdded'] / mib:.2f} MiB new ({added:.1f} %)",
                "< 10 %",
            ),
            (f"pg_restore -j2 from the local file (baseline, best of {ROUNDS})", f"{t_local}", ""),
            (
                "pg_restore --single-transaction streamed from a local -Z0 file (one job)",
                f"{t_local_stream} = {t_local_stream / t_local} of -j2",
                "",
            ),
            ("restic dump of the archive to /dev/null (restic alone)", f"{t_read}", ""),
            (
                f"Safehold restore, streamed (one job; best of {ROUNDS})",
                f"{t_restore} = **{t_restore / t_local}** of -j2",
                "<= 1.3x",
            ),
            (
                "Safehold restore, SAFEHOLD_PG_RESTORE_JOBS=2",
                f"{t_restore_j2} = {t_restore_j2 / t_local} of -j2",
                "<= 1.3x",
            ),
        ]
        print(f"load before: {load}; after: {os.getloadavg()}")
        print("| measurement | result | goal |\n|---|---|---|")
        for name, value, goal in rows:
            print(f"| {name} | {value} | {goal} |")
    finally:
        pg.stop()
        s3.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
