"""`safehold restore create|list|describe`."""

from __future__ import annotations

import argparse
from typing import Any

from safehold.cli.backup import (
    RAW,
    _wait_and_output,
    create_and_wait,
    describe_command,
    format_flag,
    list_command,
)
from safehold.cli.common import (
    RESTORES,
    TLS_MODES,
    CliError,
    comma_list,
    connection_parent,
    database_mapping,
    label_selector,
    namespace_pair,
    ready_timeout,
    target_host,
    target_name,
    target_tls,
    target_value,
)

CREATE_EPILOG = """examples:
  # restore everything of a backup, waiting for the result
  safehold restore create shop-restore --from-backup before-upgrade -n shop --wait

  # restore the newest successful backup of a policy into another namespace
  safehold restore create shop-copy --from-policy nightly --namespace-mapping shop:shop-copy

  # only ConfigMaps and Secrets, overwriting what exists, as a dry run first
  safehold restore create check --from-backup before-upgrade \\
      --include-resources configmaps,secrets --existing-resource-policy update --dry-run --wait

  # the database target "shop-db" under a new name, into an emptied database
  safehold restore create db-copy --from-backup before-upgrade \\
      --database-mapping shop-db:shop=shop_copy --database-clean shop-db \\
      --database-restore-accounts shop-db --target-ready-timeout 10m --wait

  # the database target "cache" into another Redis server
  safehold restore create cache-move --from-backup before-upgrade \\
      --database-host cache=redis-2.shop.svc:6379 --database-credentials cache=redis-2-auth

  # print the object for Git instead of creating it
  safehold restore create shop-restore --from-backup before-upgrade -o yaml

exit status: 0 created (and, with --wait, succeeded); 1 API error or failed restore;
2 usage error; 3 --wait timed out.
"""

LIST_EPILOG = """examples:
  safehold restore list
  safehold restore list -A
"""

DESCRIBE_EPILOG = """examples:
  safehold restore describe shop-restore -n shop
"""


def register(sub: Any) -> None:
    """Add `restore` and its subcommands to the top-level subparsers."""
    conn = connection_parent()
    restore = sub.add_parser(
        "restore",
        help="create, list and describe RestoreRequests",
        description="Work with RestoreRequests (safehold.io/v1alpha1).",
        epilog="examples:\n  safehold restore create r1 --from-backup now --wait\n"
        "  safehold restore list\n  safehold restore describe r1\n",
        formatter_class=RAW,
    )
    verbs = restore.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser(
        "create",
        parents=[conn],
        help="create a RestoreRequest (or print it with -o yaml|json)",
        description="Create a RestoreRequest from a Backup, or from the newest successful "
        "Backup of a BackupPolicy.",
        epilog=CREATE_EPILOG,
        formatter_class=RAW,
    )
    create.add_argument("name", help="name of the new RestoreRequest")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-backup", metavar="BACKUP", help="restore this Backup")
    source.add_argument(
        "--from-policy",
        metavar="POLICY",
        help="restore the newest successful Backup of this BackupPolicy",
    )
    create.add_argument(
        "--namespace-mapping",
        type=namespace_pair,
        action="append",
        default=[],
        metavar="FROM:TO",
        help="restore objects of namespace FROM into TO (repeatable)",
    )
    create.add_argument(
        "--include-namespaces",
        type=comma_list,
        metavar="NS[,NS...]",
        help="only objects from these namespaces of the backup",
    )
    create.add_argument(
        "--include-resources",
        type=comma_list,
        metavar="RES[,RES...]",
        help="resource types as resource.group (default: *)",
    )
    create.add_argument(
        "--exclude-resources", type=comma_list, metavar="RES[,RES...]", help="never these types"
    )
    create.add_argument(
        "-l",
        "--selector",
        type=label_selector,
        metavar="K=V[,K=V...]",
        help="only objects with these labels",
    )
    create.add_argument(
        "--existing-resource-policy",
        choices=["skip", "update"],
        help="objects that already exist: leave them (skip, default) or overwrite (update)",
    )
    create.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing; the RestoreRequest reports what it would do",
    )
    _database_flags(create)
    _wait_and_output(create)
    create.set_defaults(func=_create, parser=create)

    lst = verbs.add_parser(
        "list",
        aliases=["ls"],
        parents=[conn],
        help="list RestoreRequests",
        description="List RestoreRequests with phase, backup and object counts.",
        epilog=LIST_EPILOG,
        formatter_class=RAW,
    )
    lst.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    format_flag(lst, "print the objects as a List instead of a table")
    lst.set_defaults(func=_list)

    describe = verbs.add_parser(
        "describe",
        parents=[conn],
        help="show the status of a RestoreRequest",
        description="Backup, counts (created/updated/skipped/failed), results path, "
        "conditions, errors and warnings of a RestoreRequest.",
        epilog=DESCRIBE_EPILOG,
        formatter_class=RAW,
    )
    describe.add_argument("name", help="name of the RestoreRequest")
    format_flag(describe, "print the object instead of the report")
    describe.set_defaults(func=_describe)


def _database_flags(create: argparse.ArgumentParser) -> None:
    """spec.databases: per-target flags name the target of the backup they apply to."""
    group = create.add_argument_group(
        "databases (TARGET is a database target of the backup, as `backup describe` lists it)"
    )
    group.add_argument(
        "--database-mapping",
        type=database_mapping,
        action="append",
        default=[],
        metavar="TARGET:FROM=TO",
        help="restore database FROM of TARGET under the name TO (repeatable)",
    )
    group.add_argument(
        "--database-clean",
        type=target_name,
        action="append",
        default=[],
        metavar="TARGET",
        help="drop what exists before loading (PostgreSQL/MariaDB: the dumped objects; "
        "Redis: flush the database); without it the database must be empty (repeatable)",
    )
    group.add_argument(
        "--database-restore-accounts",
        type=target_name,
        action="append",
        default=[],
        metavar="TARGET",
        help="also replay the stored roles, users and grants first (repeatable)",
    )
    group.add_argument(
        "--database-host",
        type=target_host,
        action="append",
        default=[],
        metavar="TARGET=HOST[:PORT]",
        help="restore TARGET into this server instead of the one backed up",
    )
    group.add_argument(
        "--database-credentials",
        type=target_value,
        action="append",
        default=[],
        metavar="TARGET=SECRET",
        help="Secret (username/password) to connect to that server with",
    )
    group.add_argument(
        "--database-tls",
        type=target_tls,
        action="append",
        default=[],
        metavar="TARGET=MODE[:CA_SECRET]",
        help=f"TLS to that server: {'|'.join(TLS_MODES)}, optionally a Secret with ca.crt",
    )
    group.add_argument(
        "--target-ready-timeout",
        type=ready_timeout,
        metavar="DURATION",
        help="how long each database restore waits for its server to accept connections "
        "(0s to 24h; default 5m; 0s: no waiting)",
    )


def _create(args: argparse.Namespace) -> int:
    from safehold.cli.manifests import DatabaseOptions, ManifestError, restore

    try:
        body = restore(
            args.name,
            namespace=args.namespace,
            backup=args.from_backup,
            policy=args.from_policy,
            namespaces=args.include_namespaces,
            selector=args.selector,
            include_resources=args.include_resources,
            exclude_resources=args.exclude_resources,
            namespace_mapping=args.namespace_mapping,
            existing_resource_policy=args.existing_resource_policy,
            dry_run=args.dry_run,
            databases=DatabaseOptions(
                mapping=args.database_mapping,
                clean=args.database_clean,
                restore_accounts=args.database_restore_accounts,
                host=args.database_host,
                credentials=args.database_credentials,
                tls=args.database_tls,
                ready_timeout=args.target_ready_timeout,
            ),
        )
    except ManifestError as err:
        raise CliError(str(err), code=2) from None
    return create_and_wait(args, RESTORES, body, args.namespace)


def _list(args: argparse.Namespace) -> int:
    from safehold.cli.output import restore_table

    return list_command(args, RESTORES, "restore requests", restore_table)


def _describe(args: argparse.Namespace) -> int:
    from safehold.cli.output import describe_restore

    return describe_command(args, RESTORES, describe_restore)
