"""Fair run queue: Backups and RestoreRequests run in a bounded pool of worker threads, and
whenever a worker frees up it takes the next run of the namespace that has the fewest runs
going (and within it, of the policy that has), so a burst of runs in one namespace never
makes another namespace wait for the whole burst.

Kopf handlers only submit; they return at once, so Kopf's own workers never block on runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def worker_count() -> int:
    return max(1, int(os.environ.get("SAFEHOLD_MAX_CONCURRENT_RUNS") or 8))


@dataclass
class _Item:
    key: str
    """The object's UID: a run is never queued or running twice at once."""
    namespace: str
    group: str
    """Within a namespace: the policy (or "" for runs made by hand)."""
    work: Callable[[], None]


@dataclass
class FairQueue:
    workers: int = field(default_factory=worker_count)
    _waiting: dict[tuple[str, str], deque[_Item]] = field(default_factory=dict)
    _running: Counter[str] = field(default_factory=Counter)
    _running_groups: Counter[tuple[str, str]] = field(default_factory=Counter)
    _served: dict[str, int] = field(default_factory=dict)
    _served_groups: dict[tuple[str, str], int] = field(default_factory=dict)
    _keys: set[str] = field(default_factory=set)
    _tick: int = 0
    _stop: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> FairQueue:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"run-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def has(self, key: str) -> bool:
        """Whether the run is queued or running."""
        with self._cond:
            return key in self._keys

    def waiting(self, namespace: str) -> int:
        """Runs of a namespace waiting for a worker."""
        with self._cond:
            return sum(len(q) for (ns, _), q in self._waiting.items() if ns == namespace)

    def submit(self, key: str, namespace: str, group: str, work: Callable[[], None]) -> int | None:
        """Queue a run; returns how many runs of its namespace wait before it, or None when
        it is queued or running already."""
        with self._cond:
            if key in self._keys:
                return None
            self._keys.add(key)
            queue = self._waiting.setdefault((namespace, group), deque())
            queue.append(_Item(key, namespace, group, work))
            ahead = sum(len(q) for (ns, _), q in self._waiting.items() if ns == namespace) - 1
            self._cond.notify()
            return ahead

    def _pick(self) -> _Item | None:
        """The head of the group with the fewest runs going, in the namespace with the fewest
        runs going; ties go to whoever was served longest ago."""
        candidates = [k for k, q in self._waiting.items() if q]
        if not candidates:
            return None
        namespace, group = min(
            candidates,
            key=lambda k: (
                self._running[k[0]],
                self._served.get(k[0], -1),
                self._running_groups[k],
                self._served_groups.get(k, -1),
                k,
            ),
        )
        item = self._waiting[(namespace, group)].popleft()
        self._tick += 1
        self._served[namespace] = self._served_groups[(namespace, group)] = self._tick
        self._running[namespace] += 1
        self._running_groups[(namespace, group)] += 1
        return item

    def _work(self) -> None:
        while True:
            with self._cond:
                item = self._pick()
                while item is None and not self._stop:
                    self._cond.wait()
                    item = self._pick()
                if item is None:
                    return
            try:
                item.work()
            except Exception:  # a run ends itself; this only guards the worker
                log.exception("run %s in %s failed", item.key, item.namespace)
            finally:
                with self._cond:
                    self._running[item.namespace] -= 1
                    self._running_groups[(item.namespace, item.group)] -= 1
                    self._keys.discard(item.key)
                    self._cond.notify()
