"""Command line entry point: `safehold` and `kubectl safehold`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safehold import __version__

EPILOG = """examples:
  safehold operator                      run the operator against the current kubeconfig
  safehold crds generate --out crds      regenerate the CRD YAML from the models
  safehold crds check --dir crds         exit 1 when crds/ drifted from the models
  safehold docs generate                 regenerate docs/api.md from the models
  safehold backup create now --from-policy nightly --wait
                                         take a backup now and wait for the result
  safehold backup list -A                every Backup in every namespace
  safehold -n shop backup list           --kubeconfig, --context, -n before or after the command
  safehold restore create r1 --from-backup now --namespace-mapping shop:shop-copy --wait
                                         restore a backup into another namespace
  safehold verify create --from-policy nightly --wait
                                         prove that the newest backup restores (a drill)
  safehold completion bash               print a bash completion script

exit status: 0 success; 1 error (API error, failed backup, restore or drill); 2 usage error;
3 --wait timed out.
"""


def _cmd_crds(args: argparse.Namespace) -> int:
    from safehold.api import crdgen

    out = Path(args.dir)
    if args.action == "generate":
        for path in crdgen.write(out):
            print(path)
        return 0
    drifted = crdgen.drift(out)
    for name in drifted:
        print(
            f"{out / name}: differs from the models; run `safehold crds generate`", file=sys.stderr
        )
    return 1 if drifted else 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from safehold.api import docgen

    path = Path(args.path)
    if args.action == "generate":
        docgen.write(path)
        print(path)
        return 0
    if docgen.drifted(path):
        print(f"{path}: differs from the models; run `safehold docs generate`", file=sys.stderr)
        return 1
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from safehold.controllers.main import run

    return run(
        namespace=args.namespace,
        all_namespaces=args.all_namespaces,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        peering=args.peering,
        bind_address=args.bind_address,
        gateway_port=args.gateway_port,
    )


COMPLETION_EPILOG = """examples:
  source <(safehold completion bash)      # bash, current shell
  source <(safehold completion zsh)       # zsh, in ~/.zshrc
  safehold completion bash > ~/.local/share/bash-completion/completions/safehold
"""


def _cmd_completion(args: argparse.Namespace) -> int:
    from safehold.cli.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safehold",
        description="Safehold: backups, restores and restore drills for Kubernetes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"safehold {__version__}")
    from safehold.cli.common import GLOBAL_PREFIX, add_connection_flags

    add_connection_flags(
        parser.add_argument_group(
            "cluster (before the command or after it: safehold -n NS backup list)"
        ),
        prefix=GLOBAL_PREFIX,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the operator (Kopf)")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", help="watch only these namespaces")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", default=True, help="watch all (default)"
    )
    op.add_argument("--metrics-port", type=int, default=8080, help="Prometheus port (0: off)")
    op.add_argument("--health-port", type=int, default=8081, help="liveness port (0: off)")
    op.add_argument(
        "--bind-address",
        default="0.0.0.0",  # noqa: S104 - kubelet probes and Prometheus scrapes come from outside
        help="address of the metrics and liveness servers",
    )
    op.add_argument(
        "--gateway-port",
        type=int,
        default=8082,
        help="port of the repository gateway movers reach (on --bind-address)",
    )
    op.add_argument("--peering", default=None, help="Kopf peering name when running replicas")
    op.set_defaults(func=_cmd_operator)

    crds = sub.add_parser("crds", help="generate or check the CRD YAML")
    crds.add_argument("action", choices=["generate", "check"])
    crds.add_argument("--dir", "--out", dest="dir", default="crds", help="directory of CRD files")
    crds.set_defaults(func=_cmd_crds)

    docs = sub.add_parser("docs", help="generate or check the API reference (docs/api.md)")
    docs.add_argument("action", choices=["generate", "check"])
    docs.add_argument("--path", default="docs/api.md", help="file of the API reference")
    docs.set_defaults(func=_cmd_docs)

    # The resource commands import kubernetes and pydantic only when they run.
    from safehold.cli import backup, mover, restore, verify

    backup.register(sub)
    restore.register(sub)
    verify.register(sub)
    mover.register(sub)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for bash or zsh.",
        epilog=COMPLETION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=_cmd_completion)
    return parser


def main(argv: list[str] | None = None) -> int:
    from safehold.cli.common import EXIT_USAGE, CliError, apply_global_flags

    top = build_parser()
    args = top.parse_args(argv)
    try:
        apply_global_flags(args)
    except CliError as err:
        top.error(str(err))  # prints usage and the message, exits 2
    try:
        code: int = args.func(args)
    except CliError as err:
        parser = getattr(args, "parser", None)
        if err.code == EXIT_USAGE and parser is not None:
            parser.error(str(err))  # prints usage and the message, exits 2
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
