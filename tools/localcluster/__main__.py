"""`python -m localcluster up [--workdir D]`: run the local cluster until SIGINT/SIGTERM.

Prints a shell-sourceable block (also written to `<workdir>/env.sh`) exporting KUBECONFIG, the
SeaweedFS S3 endpoint and its generated keys.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path

from localcluster.cluster import LocalCluster


def env_script(cluster: LocalCluster) -> str:
    lines = ["# safehold local cluster -- source this file"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in cluster.env().items()]
    return "\n".join(lines) + "\n"


def up(workdir: Path | None, keep: bool) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with LocalCluster(workdir, keep_workdir=keep) as cluster:
        script = env_script(cluster)
        env_file = cluster.workdir / "env.sh"
        env_file.write_text(script)
        env_file.chmod(0o600)
        sys.stdout.write(script)
        for line in cluster.log_versions():
            sys.stdout.write(f"# {line}\n")
        sys.stdout.write(
            f"# ready in {cluster.startup_seconds:.1f}s; env in {env_file}; logs in "
            f"{cluster.logs_dir}. Ctrl-C stops the cluster.\n"
        )
        sys.stdout.flush()
        while not stop.wait(1.0):
            dead = [n for n, p in cluster.processes.items() if not p.running()]
            if dead:
                logging.getLogger("localcluster").error(
                    "%s exited; stopping (logs kept in %s)", ", ".join(dead), cluster.logs_dir
                )
                cluster.keep_workdir = True
                return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster and block until SIGINT/SIGTERM")
    p_up.add_argument("--workdir", type=Path, help="new or empty directory (default: a temp dir)")
    p_up.add_argument("--keep", action="store_true", help="keep the work dir on teardown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "up":
        return up(args.workdir, args.keep)
    return 2


if __name__ == "__main__":
    sys.exit(main())
