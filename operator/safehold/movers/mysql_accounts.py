"""MariaDB accounts (`mysql-system/users.sql`, from `mariadb-dump --system=users`) replayed
into a target server.

The script holds one statement per line: `CREATE USER IF NOT EXISTS`, then per account its
`GRANT`s (the first one repeating the password hash), default roles. Replaying it as it is
would be wrong twice over:

- a `GRANT … IDENTIFIED BY PASSWORD` resets the password of an account that already exists,
  even the one the restore connects with. So every statement about an account (or role) the
  target already has is left out: existing accounts are left as they are.
- a grant on a table, column or routine fails while that object does not exist yet, and the
  accounts are replayed before the databases (their objects name them as DEFINER). So what
  fails is tried again once the databases are restored; what fails then (a grant on a
  database restored under another name, an account of another plugin) is a warning that
  names the statement, its password hash left out.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from safehold.contract import env as menv
from safehold.contract.result import RESTORE_FAILED, MoverError
from safehold.movers import dbtools
from safehold.storage import restic

Account = tuple[str, str]  # (user, host); a role has the host ""

# Accounts every MariaDB server has; that they exist goes without saying.
SYSTEM_ACCOUNTS = frozenset({("root", "localhost"), ("mariadb.sys", "localhost")})
MAX_WARNINGS = 5

_NAME = r"`(?:[^`]|``)*`|'(?:[^']|'')*'|[\w.$-]+"
_ACCOUNT = re.compile(rf"({_NAME})(?:@({_NAME}))?")
_SUBJECT = (
    re.compile(rf"^CREATE (?:USER|ROLE) IF NOT EXISTS ({_NAME})(?:@({_NAME}))?"),
    re.compile(rf"SET DEFAULT ROLE \S+ FOR ({_NAME})(?:@({_NAME}))?"),
    re.compile(rf"ALTER USER ({_NAME})(?:@({_NAME}))? DEFAULT ROLE"),
)
_ERROR = re.compile(r"^ERROR (\d+ \(\w+\)) at line (\d+): (.*)$")


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "`'":
        quote = name[0]
        return name[1:-1].replace(quote * 2, quote)
    return name


def _grantee(statement: str) -> str | None:
    """What follows the first ` TO ` outside quotes of a GRANT statement."""
    quote = ""
    for i, char in enumerate(statement):
        if quote:
            quote = "" if char == quote else quote
        elif char in "`'":
            quote = char
        elif statement.startswith(" TO ", i):
            return statement[i + 4 :]
    return None


def subject(statement: str) -> Account | None:
    """The account (or role) a statement of the script is about; None for session lines."""
    if statement.startswith("GRANT "):
        rest = _grantee(statement)
        match = _ACCOUNT.match(rest) if rest is not None else None
    else:
        match = next((m for p in _SUBJECT if (m := p.search(statement))), None)
    if match is None or match.group(1).upper() == "CURRENT_USER":
        return None
    return _unquote(match.group(1)), _unquote(match.group(2) or "")


def shown(statement: str) -> str:
    """A statement as a message may show it: no password hash, no authentication string."""
    text = statement.rstrip(";").strip()
    cut = text.find(" IDENTIFIED ")
    return text if cut < 0 else text[:cut] + " IDENTIFIED …"


@dataclass
class Replay:
    """The script's statements, less those about existing accounts, and what became of them."""

    statements: list[str]
    left: list[Account] = field(default_factory=list)
    """Accounts (besides the system ones) the target already had: left as they are."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(statement, error) of the last run."""


def plan(script: str, existing: Iterable[Account], connecting: str) -> Replay:
    have = set(existing)
    keep: list[str] = []
    left: set[Account] = set()
    for line in script.splitlines():
        account = subject(line)
        if account is not None and account in have:
            if account not in SYSTEM_ACCOUNTS and account[0] != connecting:
                left.add(account)
            continue
        keep.append(line)
    return Replay(keep, sorted(left))


def errors(stderr: str, statements: Sequence[str]) -> list[tuple[str, str]]:
    """(statement, error) for each `ERROR … at line N` of a `mariadb --force` run."""
    found = []
    for line in stderr.splitlines():
        match = _ERROR.match(line.strip())
        if match is None:
            continue
        number = int(match.group(2))
        statement = statements[number - 1] if 0 < number <= len(statements) else ""
        found.append((statement, f"{match.group(1)}: {match.group(3)}"))
    return found


Runner = Callable[[str], tuple[int, str]]
"""Runs a script with `mariadb --force`: (exit code, stderr)."""


def run(replay: Replay, statements: list[str], runner: Runner) -> None:
    code, stderr = runner("\n".join(statements) + "\n")
    replay.failed = errors(stderr, statements)
    if code != 0 and not replay.failed:
        raise MoverError(RESTORE_FAILED, f"accounts: {dbtools.tail(stderr)}")


def retry_failed(replay: Replay, runner: Runner) -> None:
    """Once the databases exist: the statements that failed, again (those of unknown text
    cannot be retried and stay failed)."""
    again = [s for s, _ in replay.failed if s]
    unknown = [(s, e) for s, e in replay.failed if not s]
    replay.failed = []
    if again:
        run(replay, again, runner)
    replay.failed = unknown + replay.failed


def warnings(replay: Replay) -> list[str]:
    out = []
    if replay.left:
        names = ", ".join(f"{u}@{h}" if h else u for u, h in replay.left)
        out.append(f"accounts: left as they are (the target already has them): {names}")
    failed = [
        f"accounts: {shown(s)} failed: {e}" if s else f"accounts: {e}" for s, e in replay.failed
    ]
    out += failed[:MAX_WARNINGS]
    if len(failed) > MAX_WARNINGS:
        out.append(f"accounts: {len(failed)} statements failed in all")
    return out


def read_script(cfg: menv.DbConfig, repo: restic.Repository, snapshot: str, path: str) -> str:
    """The stored script (small: accounts and grants), through a file that is gone at once."""
    with tempfile.TemporaryFile(dir=cfg.scratch_dir) as fh:
        restic.dump_file(repo, snapshot, "/" + path, fh)
        fh.seek(0)
        return fh.read().decode(errors="replace")
