"""`safehold verify create|list|describe`: restore drills (BackupVerifications) by hand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from safehold.cli.backup import RAW, create_and_wait, describe_command, format_flag, list_command
from safehold.cli.common import VERIFICATIONS, CliError, connection_parent, duration_seconds

# How much longer than the drill's own timeout `--wait` waits by default: the drill may wait
# for another drill of its policy, and removes its scratch objects after the checks.
WAIT_GRACE_SECONDS = 600.0
DEFAULT_DRILL_TIMEOUT = "1h"

CREATE_EPILOG = """examples:
  # drill one backup: restore it into a scratch namespace, run the checks, wait for the verdict
  safehold verify create --from-backup before-upgrade -n shop --wait

  # drill the newest good backup of a policy, keep a failed drill's namespace for 2 hours
  safehold verify create nightly-check --from-policy nightly --keep-on-failure 2h --wait

  # no Ready check of restored Deployments and StatefulSets (no node to run them), 30m limit
  safehold verify create quick --from-policy nightly --no-workloads --timeout 30m

  # print the object for Git instead of creating it
  safehold verify create nightly-check --from-policy nightly -o yaml

Without NAME the drill is named <backup or policy>-drill-<UTC time>.

exit status: 0 created (and, with --wait, every check passed); 1 API error or failed drill
(the failed checks are printed); 2 usage error; 3 --wait timed out.
"""

LIST_EPILOG = """examples:
  safehold verify list
  safehold verify list -A
  safehold verify list -o yaml       the objects, every check with its message
"""

DESCRIBE_EPILOG = """examples:
  safehold verify describe nightly-check -n shop
"""


def register(sub: Any) -> None:
    """Add `verify` and its subcommands to the top-level subparsers."""
    conn = connection_parent()
    verify = sub.add_parser(
        "verify",
        help="create, list and describe restore drills (BackupVerifications)",
        description="Work with BackupVerifications (safehold.io/v1alpha1): restore drills that "
        "restore a backup into a scratch namespace, run checks and record the result.",
        epilog="examples:\n  safehold verify create --from-backup now --wait\n"
        "  safehold verify list\n  safehold verify describe now-drill-20250102-110000\n",
        formatter_class=RAW,
    )
    verbs = verify.add_subparsers(dest="verb", required=True, metavar="VERB")
    _register_create(verbs, conn)

    lst = verbs.add_parser(
        "list",
        aliases=["ls"],
        parents=[conn],
        help="list BackupVerifications",
        description="List restore drills with backup, result, measured RTO and failed checks.",
        epilog=LIST_EPILOG,
        formatter_class=RAW,
    )
    lst.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    format_flag(lst, "print the objects as a List instead of a table")
    lst.set_defaults(func=_list)

    describe = verbs.add_parser(
        "describe",
        parents=[conn],
        help="show the result of a BackupVerification",
        description="Backup, RTO, RPO, scratch namespace, conditions and every check (result, "
        "reason, duration, message) of a restore drill.",
        epilog=DESCRIBE_EPILOG,
        formatter_class=RAW,
    )
    describe.add_argument("name", help="name of the BackupVerification")
    format_flag(describe, "print the object instead of the report")
    describe.set_defaults(func=_describe)


def _register_create(verbs: Any, conn: argparse.ArgumentParser) -> None:
    create = verbs.add_parser(
        "create",
        parents=[conn],
        help="create a BackupVerification (or print it with -o yaml|json)",
        description="Start a restore drill of a Backup, or of the newest successful, not "
        "Corrupt, Backup of a BackupPolicy.",
        epilog=CREATE_EPILOG,
        formatter_class=RAW,
    )
    create.add_argument(
        "name", nargs="?", help="name of the new drill (default: <source>-drill-<UTC time>)"
    )
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-backup", metavar="BACKUP", help="drill this Backup")
    source.add_argument(
        "--from-policy",
        metavar="POLICY",
        help="drill the newest successful, not Corrupt, Backup of this BackupPolicy",
    )
    create.add_argument(
        "--keep-on-failure",
        type=_duration,
        metavar="DURATION",
        help="keep a failed drill's scratch namespace this long for inspection (1m to 720h)",
    )
    create.add_argument(
        "--timeout",
        dest="drill_timeout",
        type=_duration,
        metavar="DURATION",
        help="the drill's own limit, restore and checks (1m to 24h; default: 1h)",
    )
    create.add_argument(
        "--no-workloads",
        action="store_true",
        help="skip the check that restored Deployments and StatefulSets become Ready",
    )
    create.add_argument(
        "--wait", action="store_true", help="wait for the verdict; exit 1 if a check failed"
    )
    create.add_argument(
        "--wait-timeout",
        dest="timeout",
        type=duration_seconds,
        metavar="DURATION",
        help="how long --wait waits (default: the drill's timeout + 10m; exit 3 after)",
    )
    create.add_argument(
        "-o",
        "--output",
        choices=["yaml", "json"],
        help="print the object instead of creating it (for GitOps)",
    )
    create.set_defaults(func=_create, parser=create)


def _duration(text: str) -> str:
    """A Go-style duration, kept as written (its range is the API's, checked when building)."""
    import re

    from safehold.api.durations import PATTERN

    if not re.fullmatch(PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30m, 2h or 1h30m (units ms, s, m, h), got {text!r}"
        )
    return text


def _create(args: argparse.Namespace) -> int:
    from safehold.cli.manifests import ManifestError, verification, verification_name
    from safehold.cli.output import now_utc

    source = args.from_backup or args.from_policy
    name = args.name or verification_name(source, now_utc())
    try:
        body = verification(
            name,
            namespace=args.namespace,
            backup=args.from_backup,
            policy=args.from_policy,
            keep_on_failure=args.keep_on_failure,
            timeout=args.drill_timeout,
            workloads=not args.no_workloads,
        )
    except ManifestError as err:
        raise CliError(str(err), code=2) from None
    if args.timeout is None:
        drill = body["spec"].get("timeout") or DEFAULT_DRILL_TIMEOUT
        args.timeout = duration_seconds(drill) + WAIT_GRACE_SECONDS
    return create_and_wait(args, VERIFICATIONS, body, args.namespace, report=_report)


def _report(obj: Mapping[str, Any], succeeded: bool) -> None:
    """After the outcome line of --wait: each failed check (stderr), or RTO and RPO."""
    from safehold.cli.output import drill_summary

    stream = sys.stdout if succeeded else sys.stderr
    for line in drill_summary(obj, succeeded):
        print(f"  {line}", file=stream)


def _list(args: argparse.Namespace) -> int:
    from safehold.cli.output import verification_table

    return list_command(args, VERIFICATIONS, "restore drills", verification_table)


def _describe(args: argparse.Namespace) -> int:
    from safehold.cli.output import describe_verification

    return describe_command(args, VERIFICATIONS, describe_verification)
