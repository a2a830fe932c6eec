"""`safehold mover <verb>`: the code that runs inside mover Jobs (not for interactive use).

Each verb reads its configuration from the environment (see the verb's module) and reports one
JSON result on stdout and in the termination-message file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _volume_backup() -> int:
    from safehold.movers.volume import volume_backup

    return volume_backup()


def _volume_restore() -> int:
    from safehold.movers.volume import volume_restore

    return volume_restore()


def _db_dump() -> int:
    from safehold.movers.db_dump import db_dump

    return db_dump()


def _db_restore() -> int:
    from safehold.movers.db_dump import db_restore

    return db_restore()


def _db_verify() -> int:
    from safehold.movers.db_verify import db_verify

    return db_verify()


def _db_drop() -> int:
    from safehold.movers.db_verify import db_drop

    return db_drop()


VERBS: dict[str, tuple[str, Callable[[], int]]] = {
    "volume-backup": ("back up a mounted PVC into the repository", _volume_backup),
    "volume-restore": ("restore a snapshot into a mounted PVC", _volume_restore),
    "db-dump": ("dump one database target into the repository", _db_dump),
    "db-restore": ("restore one database target from the repository", _db_restore),
    "db-verify": ("check a drill's scratch databases, then drop them", _db_verify),
    "db-drop": ("drop scratch databases a drill left behind", _db_drop),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mover = sub.add_parser(
        "mover",
        help="run a data mover (inside Safehold's Jobs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = mover.add_subparsers(dest="verb", required=True)
    for verb, (help_text, fn) in VERBS.items():
        parser = verbs.add_parser(verb, help=help_text)
        parser.set_defaults(func=lambda _args, fn=fn: fn())
