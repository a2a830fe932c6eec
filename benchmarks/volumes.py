"""Benchmark: moving volume data — Safehold's mover vs plain restic vs tar | zstd -1.

All in one run, on the same data, into the same SeaweedFS (fresh repositories per contender):
(a) many 4 KiB files, (b) one large file, (c) incremental after a 1 % change (bytes uploaded as
a fraction of the data), (d) restore vs `restic restore` and vs `zstd -d | tar -x`.

Usage: python benchmarks/volumes.py [--gib 1.0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from localcluster import binaries
from localcluster.cluster import LocalCluster

PASSWORD = "benchmark-only-password"  # noqa: S105 - local benchmark repository


def make_small_files(root: Path, total: int) -> None:
    count = total // 4096
    per_dir = 1000
    block = os.urandom(4096 * 64)
    for i in range(count):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        off = (i * 4096) % (len(block) - 4096)
        (d / f"f{i:07d}").write_bytes(i.to_bytes(8, "little") + block[off + 8 : off + 4096])


def make_large_file(root: Path, total: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "large.bin").open("wb") as out:
        for _ in range(total // (8 << 20)):
            out.write(os.urandom(8 << 20))


def change_one_percent(root: Path) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if len(files) == 1:
        size = files[0].stat().st_size
        with files[0].open("r+b") as out:
            out.seek(size // 2)
            out.write(os.urandom(size // 100))
    else:
        for p in files[::100]:
            p.write_bytes(os.urandom(4096))


class Env:
    def __init__(self, cluster: LocalCluster, bucket: str) -> None:
        self.cluster = cluster
        self.bucket = bucket
        self.restic = str(binaries.find("restic"))

    def repo_env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "RESTIC_REPOSITORY": f"s3:{self.cluster.s3_endpoint}/{self.bucket}/{name}",
            "RESTIC_PASSWORD": PASSWORD,
            "AWS_ACCESS_KEY_ID": self.cluster.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.cluster.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "SAFEHOLD_RESTIC_OPTIONS": "-o s3.bucket-lookup=path",
            "SAFEHOLD_RESTIC": self.restic,
            "RESTIC_CACHE_DIR": str(Path(tempfile.gettempdir()) / f"restic-cache-{name}"),
        }

    def init(self, name: str) -> None:
        subprocess.run(
            [self.restic, "-o", "s3.bucket-lookup=path", "init"],
            env=self.repo_env(name),
            check=True,
            capture_output=True,
        )


def timed(
    cmd: list[str] | str,
    env: dict[str, str] | None = None,
    shell: bool = False,
    cwd: Path | None = None,
) -> tuple[float, str]:
    started = time.monotonic()
    out = subprocess.run(
        cmd, env=env, shell=shell, cwd=cwd, check=True, capture_output=True, text=True
    )
    return time.monotonic() - started, out.stdout


def mover_backup(env: Env, repo: str, path: Path) -> tuple[float, dict[str, object]]:
    e = env.repo_env(repo) | {
        "SAFEHOLD_VOLUME_PATH": str(path),
        "SAFEHOLD_BACKUP": "bench/b",
        "SAFEHOLD_PVC": "bench/data",
        "SAFEHOLD_TERMINATION_LOG": os.devnull,
    }
    seconds, out = timed([sys.executable, "-m", "safehold", "mover", "volume-backup"], e)
    return seconds, json.loads(out.strip().splitlines()[-1])


def restic_backup(env: Env, repo: str, path: Path) -> tuple[float, dict[str, object]]:
    seconds, out = timed(
        [
            env.restic,
            "-o",
            "s3.bucket-lookup=path",
            "backup",
            str(path),
            "--json",
            "--quiet",
            "--host",
            "safehold",
        ],
        env.repo_env(repo),
    )
    summary = json.loads(out.strip().splitlines()[-1])
    return seconds, {"bytesAdded": summary["data_added"], "snapshotId": summary["snapshot_id"]}


def run_case(env: Env, label: str, data: Path, work: Path) -> list[str]:
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    subprocess.run(["tar", "-cf", "/dev/null", str(data)], check=True)  # warm the page cache
    tag = uuid.uuid4().hex[:6]
    env.init(f"mover-{tag}")
    env.init(f"restic-{tag}")
    t_restic, _ = restic_backup(env, f"restic-{tag}", data)
    t_mover, _first = mover_backup(env, f"mover-{tag}", data)
    archive = work / f"archive-{tag}.tar.zst"
    t_tar, _ = timed(f"tar -C {data} -cf - . | zstd -1 -q -T1 -o {archive}", shell=True)
    change_one_percent(data)
    _, second = mover_backup(env, f"mover-{tag}", data)
    added = int(second["bytesAdded"])  # type: ignore[call-overload]
    _, plain_second = restic_backup(env, f"restic-{tag}", data)
    plain_added = int(plain_second["bytesAdded"])  # type: ignore[call-overload]

    target_m, target_r, target_t = work / "rm", work / "rr", work / "rt"
    for t in (target_m, target_r, target_t):
        shutil.rmtree(t, ignore_errors=True)
        t.mkdir()
    snap = str(second["snapshotId"])
    e = env.repo_env(f"mover-{tag}") | {
        "SAFEHOLD_VOLUME_PATH": str(target_m),
        "SAFEHOLD_SNAPSHOT_ID": snap,
        "SAFEHOLD_SNAPSHOT_PATH": quote(str(data), safe=""),
        "SAFEHOLD_TERMINATION_LOG": os.devnull,
    }
    t_mrestore, _ = timed([sys.executable, "-m", "safehold", "mover", "volume-restore"], e)
    t_rrestore, _ = timed(
        [
            env.restic,
            "-o",
            "s3.bucket-lookup=path",
            "restore",
            f"{snap}:{data}",
            "--target",
            str(target_r),
        ],
        env.repo_env(f"mover-{tag}"),
    )
    t_untar, _ = timed(f"zstd -d -q -c {archive} | tar -C {target_t} -xf -", shell=True)
    gib = size / (1 << 30)
    return [
        f"{label}: {size / (1 << 20):.0f} MiB",
        f"  backup   plain restic {t_restic:7.2f} s   mover {t_mover:7.2f} s   "
        f"ratio {t_mover / t_restic:.2f}x (goal <= 1.1x)   tar|zstd -1 {t_tar:7.2f} s "
        f"(mover/tar {t_mover / t_tar:.2f}x)   {gib / t_mover:.2f} GiB/s",
        f"  incremental after 1% change: {added / (1 << 20):.1f} MiB added = "
        f"{100 * added / size:.2f} % of the data (goal < 3 %); plain restic: "
        f"{100 * plain_added / size:.2f} %",
        f"  restore  restic restore {t_rrestore:7.2f} s   mover {t_mrestore:7.2f} s   "
        f"ratio {t_mrestore / t_rrestore:.2f}x (goal <= 1.2x)   zstd|tar -x {t_untar:7.2f} s",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0, help="data size per case")
    args = parser.parse_args()
    total = int(args.gib * (1 << 30))
    lines: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="safehold-bench-") as tmp,
        LocalCluster(node_agent=False) as cluster,
    ):
        env = Env(cluster, "bench")
        cluster.create_bucket("bench")
        work = Path(tmp)
        small, large = work / "small", work / "large"
        make_small_files(small, total)
        lines += run_case(env, "(a) 4 KiB files", small, work)
        shutil.rmtree(small)
        make_large_file(large, total)
        lines += run_case(env, "(b) one large file", large, work)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
