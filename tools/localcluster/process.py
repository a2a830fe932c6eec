"""Managed subprocesses of the local cluster.

Each process runs in its own process group (so stopping it also stops anything it forked), writes
stdout and stderr to one log file, and gets SIGKILL from the kernel if the thread that started it
goes away (`setpriv --pdeathsig KILL`, when available), so a crashed test run leaves no servers
behind. `stop()` sends SIGTERM to the group and SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_SETPRIV = shutil.which("setpriv")


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early or did not become ready."""


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' when missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (all sockets held until chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_pair(offset: int) -> tuple[int, int]:
    """A port `p` such that `p` and `p + offset` are both free on 127.0.0.1."""
    for _ in range(200):
        (port,) = free_ports(1)
        if port + offset > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port, port + offset
    raise ProcessError(f"no pair of free ports {offset} apart on 127.0.0.1")


class ManagedProcess:
    """One subprocess with a log file, a readiness wait and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        kill_with_parent: bool = True,
        stdin_devnull: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.kill_with_parent = kill_with_parent
        self.stdin_devnull = stdin_devnull
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.started_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ManagedProcess:
        """Start the process; it runs in a new session/process group."""
        if self._popen is not None:
            raise ProcessError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"# {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        argv = self.argv
        if self.kill_with_parent and _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        try:
            self._popen = subprocess.Popen(
                argv,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL if self.stdin_devnull else None,
                env=self.env,
                cwd=str(self.cwd) if self.cwd else None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._close_log()
            raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its exit code (negative: killed by signal)."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        code = self._popen.wait(timeout)
        self._close_log()
        return code

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def wait_ready(
        self,
        check: Callable[[], bool],
        timeout: float,
        *,
        what: str = "ready",
        interval: float = 0.05,
        max_interval: float = 0.5,
    ) -> float:
        """Poll `check()` until it returns True; returns the seconds waited.

        Raises `ProcessError` (with the last log lines) when the process exits first or the
        timeout passes. Exceptions raised by `check` count as "not yet".
        """
        start = time.monotonic()
        deadline = start + timeout
        last_error = ""
        delay = interval
        while True:
            if not self.running():
                raise ProcessError(
                    f"{self.name} exited with code {self.returncode} before it was {what};"
                    f" log {self.log_path}, last lines:\n{self.log_tail()}"
                )
            try:
                if check():
                    return time.monotonic() - start
            except Exception as exc:  # readiness probes fail in many ways while starting
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} not {what} after {timeout:.0f}s"
                    + (f" (last probe error: {last_error})" if last_error else "")
                    + f"; log {self.log_path}, last lines:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, max_interval)

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the whole process group (ignoring a group that is already gone)."""
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
        with self._lock:
            if self._popen is None:
                return None
            if self._popen.poll() is None:
                self.signal_group(signal.SIGTERM)
                try:
                    self._popen.wait(grace)
                except subprocess.TimeoutExpired:
                    self.signal_group(signal.SIGKILL)
                    self._popen.wait()
            # Children that ignored SIGTERM or outlived the leader die with the group.
            self.signal_group(signal.SIGKILL)
            self._close_log()
            return self._popen.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, log={str(self.log_path)!r})"
