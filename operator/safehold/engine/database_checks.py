"""PLACEHOLDER (uncommitted) until the database-check branch lands."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from safehold.api.backup import DatabaseResult
from safehold.api.content import DatabaseTarget
from safehold.api.verification import CheckStatus, DatabaseCheck
from safehold.engine.movers import MoverLauncher


def check_database_target(
    launcher: MoverLauncher,
    namespace: str,
    dumped: DatabaseResult,
    target: DatabaseTarget | None,
    check: DatabaseCheck | None,
    scratch_suffix: str,
    on_created: Callable[[list[str]], None],
) -> CheckStatus:
    return CheckStatus(name=f"database:{dumped.target}", result="Skipped", reason="NotYet")


def drop_scratch_databases(
    launcher: MoverLauncher,
    namespace: str,
    target: DatabaseTarget | None,
    check: DatabaseCheck | None,
    names: Sequence[str],
) -> None:
    return None
