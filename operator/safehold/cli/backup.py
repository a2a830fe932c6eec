"""`safehold backup create|list|describe|download|delete`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from safehold.cli.common import (
    BACKUPS,
    LOCATIONS,
    CliError,
    Objects,
    comma_list,
    connection_parent,
    duration_seconds,
    label_selector,
    one_line,
    stderr,
    wait_for_completion,
)

if TYPE_CHECKING:
    from safehold.cli.kubeconfig import Connection

RAW = argparse.RawDescriptionHelpFormatter

CREATE_EPILOG = """examples:
  # take a backup now, with the content and location of the policy "nightly"
  safehold backup create before-upgrade --from-policy nightly -n shop

  # an ad-hoc backup of two namespaces' Deployments and ConfigMaps, waiting for the result
  safehold backup create adhoc --location primary --include-namespaces shop,payments \\
      --include-resources deployments.apps,configmaps --wait --timeout 30m

  # print the object for Git instead of creating it
  safehold backup create before-upgrade --from-policy nightly -o yaml > backup.yaml

exit status: 0 created (and, with --wait, succeeded); 1 API error or failed backup;
2 usage error; 3 --wait timed out.
"""

LIST_EPILOG = """examples:
  safehold backup list                 backups in the current namespace
  safehold backup list -n shop
  safehold backup list -A              backups in every namespace
  safehold backup list -o json         the objects, sizes in bytes (status.sizeBytes)
"""

DESCRIBE_EPILOG = """examples:
  safehold backup describe before-upgrade -n shop
"""

DOWNLOAD_EPILOG = """examples:
  # the exported Kubernetes objects of a backup as a tar archive (default: <name>.tar)
  safehold backup download before-upgrade -n shop
  safehold backup download before-upgrade -o /tmp/shop.tar
  safehold backup download before-upgrade -o - | tar -t

Reads the storage location and its Secrets with your kubeconfig and decrypts the export with
restic (on PATH or $SAFEHOLD_RESTIC). Secrets are never printed.
"""


DELETE_EPILOG = """examples:
  # delete one backup and its data (restic snapshots and catalog entry), and wait for it
  safehold backup delete before-upgrade -n shop --wait

Sets the annotation safehold.io/delete-requested=true on the Backup; the operator deletes the
backup's restic snapshots, then its catalog entry, then the Backup object - the same path
retention uses. Nothing is deleted while the storage location is not Ready or the backup still
runs; the space is freed by the repository's next prune. `kubectl delete backup` alone removes
only the object (the backup is re-discovered from storage).

exit status: 0 requested (and, with --wait, deleted); 1 API error; 3 --wait timed out.
"""


def register(sub: Any) -> None:
    """Add `backup` and its subcommands to the top-level subparsers."""
    conn = connection_parent()
    backup = sub.add_parser(
        "backup",
        help="create, list, describe and download Backups",
        description="Work with Backups (safehold.io/v1alpha1).",
        epilog="examples:\n  safehold backup create now --from-policy nightly --wait\n"
        "  safehold backup list -A\n  safehold backup describe now\n",
        formatter_class=RAW,
    )
    verbs = backup.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser(
        "create",
        parents=[conn],
        help="create a Backup (or print it with -o yaml|json)",
        description="Create a Backup from a BackupPolicy, or with an inline location and "
        "selection.",
        epilog=CREATE_EPILOG,
        formatter_class=RAW,
    )
    create.add_argument("name", help="name of the new Backup")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-policy", metavar="POLICY", help="take content and location from this BackupPolicy"
    )
    source.add_argument("--location", metavar="LOCATION", help="BackupStorageLocation to write to")
    what = create.add_argument_group("selection (with --location)")
    what.add_argument(
        "--include-namespaces",
        type=comma_list,
        metavar="NS[,NS...]",
        help="namespaces to back up (default: the Backup's own)",
    )
    what.add_argument(
        "--include-resources",
        type=comma_list,
        metavar="RES[,RES...]",
        help="resource types as resource.group, e.g. deployments.apps,configmaps (default: *)",
    )
    what.add_argument(
        "--exclude-resources", type=comma_list, metavar="RES[,RES...]", help="never these types"
    )
    what.add_argument(
        "-l",
        "--selector",
        type=label_selector,
        metavar="K=V[,K=V...]",
        help="only objects with these labels",
    )
    what.add_argument(
        "--include-cluster-resources",
        action="store_true",
        help="also export the cluster-scoped objects the selection depends on",
    )
    create.add_argument("--ttl", metavar="DURATION", help="delete the backup this long after")
    _wait_and_output(create)
    create.set_defaults(func=_create, parser=create)

    lst = verbs.add_parser(
        "list",
        aliases=["ls"],
        parents=[conn],
        help="list Backups",
        description="List Backups with phase, policy, location, size and object count.",
        epilog=LIST_EPILOG,
        formatter_class=RAW,
    )
    lst.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list Backups of every namespace"
    )
    format_flag(lst, "print the objects as a List instead of a table (raw numbers)")
    lst.set_defaults(func=_list)

    describe = verbs.add_parser(
        "describe",
        parents=[conn],
        help="show the status of a Backup",
        description="Phase, conditions, times, location, per-resource counts, volumes, "
        "databases, errors and warnings of a Backup.",
        epilog=DESCRIBE_EPILOG,
        formatter_class=RAW,
    )
    describe.add_argument("name", help="name of the Backup")
    format_flag(describe, "print the object instead of the report")
    describe.set_defaults(func=_describe)

    download = verbs.add_parser(
        "download",
        parents=[conn],
        help="download the exported objects of a Backup as a tar archive",
        description="Download the Kubernetes objects a Backup exported, as a tar archive.",
        epilog=DOWNLOAD_EPILOG,
        formatter_class=RAW,
    )
    download.add_argument("name", help="name of the Backup")
    download.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default: <name>.tar; - for stdout)"
    )
    download.set_defaults(func=_download)

    delete = verbs.add_parser(
        "delete",
        parents=[conn],
        help="delete a Backup and its data",
        description="Delete a Backup with its data in storage (restic snapshots and catalog).",
        epilog=DELETE_EPILOG,
        formatter_class=RAW,
    )
    delete.add_argument("name", help="name of the Backup")
    delete.add_argument("--wait", action="store_true", help="wait until it is deleted")
    delete.add_argument(
        "--timeout",
        type=duration_seconds,
        default=duration_seconds("10m"),
        metavar="DURATION",
        help="how long --wait waits (default: 10m; exit 3 after)",
    )
    delete.set_defaults(func=_delete)


def _wait_and_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait until it completes; exit 1 if it failed"
    )
    parser.add_argument(
        "--timeout",
        type=duration_seconds,
        default=duration_seconds("30m"),
        metavar="DURATION",
        help="how long --wait waits, e.g. 90s, 30m, 2h (default: 30m; exit 3 after)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["yaml", "json"],
        help="print the object instead of creating it (for GitOps)",
    )


def format_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-o", "--output", choices=["yaml", "json"], help=help_text)


def connect(args: argparse.Namespace) -> Connection:
    from safehold.cli.kubeconfig import connect

    return connect(args.kubeconfig, args.context, args.namespace)


def create_and_wait(
    args: argparse.Namespace,
    kind: Any,
    body: dict[str, Any],
    namespace: str | None,
    *,
    report: Any = None,
) -> int:
    """Shared tail of the `create` commands: print, or create (and wait; `report` as in
    `wait_for_completion`)."""
    from safehold.cli.output import dump

    if args.output:
        if args.wait:
            raise CliError("--wait cannot be combined with -o (nothing is created)", code=2)
        sys.stdout.write(dump(body, args.output))
        return 0
    connection = connect(args)
    ns = namespace or connection.namespace
    body["metadata"]["namespace"] = ns
    objects = Objects(connection.custom_objects(), kind)
    created = objects.create(ns, body)
    print(f"{kind.qualified}/{created['metadata']['name']} created")
    if not args.wait:
        return 0
    return wait_for_completion(
        objects, ns, created["metadata"]["name"], args.timeout, progress=stderr, report=report
    )


def _create(args: argparse.Namespace) -> int:
    from safehold.cli.manifests import ManifestError, backup

    try:
        body = backup(
            args.name,
            namespace=args.namespace,
            policy=args.from_policy,
            location=args.location,
            namespaces=args.include_namespaces,
            selector=args.selector,
            include_resources=args.include_resources,
            exclude_resources=args.exclude_resources,
            include_cluster_resources=args.include_cluster_resources,
            ttl=args.ttl,
        )
    except ManifestError as err:
        raise CliError(str(err), code=2) from None
    return create_and_wait(args, BACKUPS, body, args.namespace)


def list_command(args: argparse.Namespace, kind: Any, noun: str, table: Any) -> int:
    """Shared `list` of backups and restores: a table, or a note on stderr when empty."""
    from safehold.cli.output import now_utc

    connection = connect(args)
    namespace = None if args.all_namespaces else connection.namespace
    items = Objects(connection.custom_objects(), kind).list(namespace)
    if args.output:
        from safehold.cli.output import dump

        sys.stdout.write(dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
        return 0
    if not items:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        stderr(f"No {noun} found in {where}.")
        return 0
    sys.stdout.write(table(items, now_utc(), args.all_namespaces))
    return 0


def describe_command(args: argparse.Namespace, kind: Any, render: Any) -> int:
    """Shared `describe` of backups and restores."""
    from safehold.cli.output import now_utc

    connection = connect(args)
    obj = Objects(connection.custom_objects(), kind).get(connection.namespace, args.name)
    if args.output:
        from safehold.cli.output import dump

        sys.stdout.write(dump(obj, args.output))
        return 0
    sys.stdout.write(render(obj, now_utc()))
    return 0


def _list(args: argparse.Namespace) -> int:
    from safehold.cli.output import backup_table

    return list_command(args, BACKUPS, "backups", backup_table)


def _describe(args: argparse.Namespace) -> int:
    from safehold.cli.output import describe_backup

    return describe_command(args, BACKUPS, describe_backup)


def _download_source(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """(resolved location, snapshot id, manifest) of the backup to download."""
    from safehold.api.location import BackupStorageLocationSpec
    from safehold.kube.locations import resolve_location
    from safehold.kube.secrets import SecretProblem
    from safehold.planning.locations import password_with_newline
    from safehold.storage import catalog
    from safehold.storage.s3 import make_client

    connection = connect(args)
    namespace, name = connection.namespace, args.name
    custom = connection.custom_objects()
    obj = Objects(custom, BACKUPS).get(namespace, name)
    status = obj.get("status") or {}
    location = status.get("storageLocation")
    snapshot_id = (status.get("resources") or {}).get("snapshotId")
    if not location or not snapshot_id:
        phase = status.get("phase") or "New"
        raise CliError(
            f"backup {namespace}/{name} has no exported objects to download yet (phase {phase})"
        )
    bsl = Objects(custom, LOCATIONS).get(namespace, location)
    try:
        spec = BackupStorageLocationSpec.model_validate(bsl.get("spec") or {})
        resolved = resolve_location(
            connection.core(), namespace, location, spec, with_newline=password_with_newline(bsl)
        )
    except SecretProblem as err:
        raise CliError(f"storage location {namespace}/{location}: {err}") from None
    except ValueError as err:  # pydantic ValidationError
        raise CliError(f"storage location {namespace}/{location} is invalid: {err}") from None
    try:
        # Read with the caller's own credentials, for a download only.
        manifest = catalog.read_manifest(
            make_client(resolved.s3), resolved.s3.layout, namespace, name, privileged=True
        )
    except Exception as err:  # botocore errors; their text never holds the keys
        raise CliError(
            f"cannot read the catalog of {namespace}/{name}: {one_line(str(err))}"
        ) from None
    if manifest is None or manifest.export is None:
        raise CliError(f"the catalog in location {location} has no export of {namespace}/{name}")
    return resolved, snapshot_id, manifest


def _download(args: argparse.Namespace) -> int:
    from safehold.api.units import human_bytes
    from safehold.storage import restic

    resolved, snapshot_id, manifest = _download_source(args)
    repo = resolved.repository(resolved.namespace)
    target = args.output or f"{args.name}.tar"
    try:
        if target == "-":
            sys.stdout.flush()
            restic.dump_archive(repo, snapshot_id, manifest.export.root, sys.stdout.buffer)
            return 0
        written = _dump_to_file(repo, snapshot_id, manifest.export.root, Path(target))
    except restic.ResticError as err:
        raise CliError(f"restic dump failed ({err.reason}): {one_line(str(err))}") from None
    print(f"wrote {target} ({human_bytes(written)}, snapshot {snapshot_id[:8]})")
    return 0


def _dump_to_file(repo: Any, snapshot_id: str, root: str, target: Path) -> int:
    """Stream into a temporary file next to `target`, then rename; returns the size."""
    from safehold.storage import restic

    directory = target.parent if str(target.parent) else Path()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
        "wb", dir=directory, prefix=f".{target.name}.", suffix=".part", delete=False
    )
    try:
        with handle:
            restic.dump_archive(repo, snapshot_id, root, cast(BinaryIO, handle))
        os.chmod(handle.name, 0o600)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return target.stat().st_size


def _delete(args: argparse.Namespace) -> int:
    import time

    from safehold.cli.common import EXIT_TIMEOUT

    connection = connect(args)
    namespace, name = connection.namespace, args.name
    custom = connection.custom_objects()
    objects = Objects(custom, BACKUPS)
    objects.get(namespace, name)  # a clear error when it does not exist
    patch = {"metadata": {"annotations": {"safehold.io/delete-requested": "true"}}}
    objects.patch(namespace, name, patch)
    print(f"{BACKUPS.qualified}/{name} deletion requested")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not any(o["metadata"]["name"] == name for o in objects.list(namespace)):
            print(f"{BACKUPS.qualified}/{name} deleted with its data")
            return 0
        time.sleep(1)
    stderr(f"timed out: {namespace}/{name} still exists (is its storage location Ready?)")
    return EXIT_TIMEOUT
