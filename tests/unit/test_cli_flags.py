"""The CLI's flags: connection flags before or after the command, the database options of
`restore create`, sizes, and every command the docs and --help show (argument parsing)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api.backup import BackupStatus
from safehold.api.restore import RestoreRequestSpec
from safehold.api.units import human_bytes
from safehold.cli import output
from safehold.cli.common import CliError, apply_global_flags
from safehold.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def parse(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    apply_global_flags(args)
    return args


# --- connection flags before and after the command ---------------------------------------

RESOURCE_COMMANDS = [
    ["backup", "create", "b1", "--from-policy", "p"],
    ["backup", "list"],
    ["backup", "ls", "-A"],
    ["backup", "describe", "b1"],
    ["backup", "download", "b1"],
    ["backup", "delete", "b1"],
    ["restore", "create", "r1", "--from-backup", "b1"],
    ["restore", "list"],
    ["restore", "describe", "r1"],
    ["verify", "create", "d1", "--from-backup", "b1"],
    ["verify", "create", "--from-policy", "p", "--no-workloads"],
    ["verify", "list"],
    ["verify", "ls", "-A"],
    ["verify", "describe", "d1"],
]
FLAGS = ["-n", "shop", "--kubeconfig", "/k/config", "--context", "ctx"]


@pytest.mark.parametrize("command", RESOURCE_COMMANDS, ids=" ".join)
def test_connection_flags_work_before_and_after_the_command(command: list[str]) -> None:
    before, after = parse(*FLAGS, *command), parse(*command, *FLAGS)
    for args in (before, after):
        assert (args.namespace, args.kubeconfig, args.context) == ("shop", "/k/config", "ctx")
    long_form = parse("--namespace=shop", *command)
    assert long_form.namespace == "shop"


def test_the_flag_after_the_command_wins() -> None:
    args = parse("-n", "first", "--context", "a", "restore", "list", "-n", "second")
    assert (args.namespace, args.context) == ("second", "a")


def test_no_flag_leaves_the_defaults() -> None:
    args = parse("backup", "list")
    assert (args.namespace, args.kubeconfig, args.context) == (None, None, None)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "x", "operator"],
        ["--kubeconfig", "k", "crds", "check"],
        ["--context", "c", "completion", "bash"],
        ["-n", "x", "mover", "db-dump"],
    ],
)
def test_connection_flags_before_a_command_without_them_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert f"before `{argv[2]}`" in err
    assert out == ""


def test_the_operator_keeps_its_own_namespace_flag() -> None:
    args = parse("operator", "-n", "a", "-n", "b")
    assert args.namespace == ["a", "b"]
    with pytest.raises(CliError):
        apply_global_flags(build_parser().parse_args(["-n", "x", "operator"]))


def test_flags_before_the_command_reach_the_created_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "-n", "safehold-system", "restore", "create", "r1", "--from-backup", "b1",
        "-o", "yaml",
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load(out)["metadata"] == {"name": "r1", "namespace": "safehold-system"}


# --- restore create: database options -----------------------------------------------------


def restore_spec(capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    code, out, err = run(
        capsys, "restore", "create", "r1", "--from-backup", "b1", *flags, "-o", "json"
    )
    assert code == 0, err
    spec: dict[str, Any] = json.loads(out)["spec"]
    RestoreRequestSpec.model_validate(spec)
    return spec


def test_database_options_become_exactly_those_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = restore_spec(
        capsys,
        "--database-mapping", "orders:orders=orders_copy",
        "--database-mapping", "orders:audit=audit_copy",
        "--database-clean", "orders",
        "--database-restore-accounts", "orders",
        "--database-clean", "cache",
        "--database-mapping", "cache:0=5",
        "--database-host", "cache=redis-2.shop.svc:6380",
        "--database-credentials", "cache=redis-2-auth",
        "--database-tls", "cache=verify-full:redis-ca",
        "--database-host", "legacy=[fd00::5]:5433",
        "--target-ready-timeout", "10m",
    )  # fmt: skip
    assert spec == {
        "backupRef": {"name": "b1"},
        "databases": {
            "targets": [
                {
                    "target": "orders",
                    "databaseMapping": {"orders": "orders_copy", "audit": "audit_copy"},
                    "clean": True,
                    "restoreAccounts": True,
                },
                {
                    "target": "cache",
                    "host": "redis-2.shop.svc",
                    "port": 6380,
                    "credentialsSecret": "redis-2-auth",
                    "tls": {"mode": "verify-full", "caSecret": "redis-ca"},
                    "databaseMapping": {"0": "5"},
                    "clean": True,
                },
                {"target": "legacy", "host": "fd00::5", "port": 5433},
            ],
            "targetReadyTimeout": "10m",
        },
    }


def test_only_the_ready_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    spec = restore_spec(capsys, "--target-ready-timeout", "0s")
    assert spec["databases"] == {"targetReadyTimeout": "0s"}


def test_no_database_options_no_databases_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert "databases" not in restore_spec(capsys)


def test_a_host_without_port_and_tls_without_ca(capsys: pytest.CaptureFixture[str]) -> None:
    spec = restore_spec(capsys, "--database-host", "db=pg.shop.svc", "--database-tls", "db=require")
    assert spec["databases"]["targets"] == [
        {"target": "db", "host": "pg.shop.svc", "tls": {"mode": "require"}}
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--database-mapping", "orders"], "expected TARGET:FROM=TO"),
        (["--database-mapping", "orders:a"], "expected TARGET:FROM=TO"),
        (["--database-mapping", "orders:=b"], "expected TARGET:FROM=TO"),
        (["--database-mapping", "Orders:a=b"], "'Orders' is not a database target name"),
        (["--database-clean", "my_db"], "'my_db' is not a database target name"),
        (["--database-restore-accounts", ""], "'' is not a database target name"),
        (["--database-host", "db"], "expected TARGET=HOST[:PORT]"),
        (["--database-host", "db=pg:0"], "port from 1 to 65535"),
        (["--database-host", "db=pg:99999"], "port from 1 to 65535"),
        (["--database-host", "db=pg:http"], "port from 1 to 65535"),
        (["--database-credentials", "db="], "expected TARGET=VALUE"),
        (["--database-tls", "db=always"], "TLS mode must be one of disable, prefer"),
        (["--target-ready-timeout", "5x"], "expected a duration from 0s to 24h"),
        (["--target-ready-timeout", "25h"], "expected a duration from 0s to 24h"),
        (["--target-ready-timeout=-1s"], "expected a duration from 0s to 24h"),
        (
            ["--database-mapping", "db:a=x", "--database-mapping", "db:a=y"],
            "db:a is mapped twice ('x' and 'y')",
        ),
        (
            ["--database-mapping", "db:a=x", "--database-mapping", "db:b=x"],
            "target 'db' maps two databases to 'x'",
        ),
        (
            ["--database-host", "db=h1", "--database-host", "db=h2"],
            "--database-host: target 'db' is given twice ('h1', 'h2')",
        ),
        (
            ["--database-credentials", "db=s1", "--database-credentials", "db=s2"],
            "--database-credentials: target 'db' is given twice",
        ),
    ],
)
def test_bad_database_options_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, out, err = run(capsys, "restore", "create", "r1", "--from-backup", "b1", *flags)
    assert code == 2
    assert message in err, err
    flag = next(f for f in flags if f.startswith("--")).split("=")[0]
    assert flag in err, err
    assert out == ""


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (2370508919, "2.2GiB"),
        (1024**3 - 1, "1024MiB"),
        (5 * 1024**5, "5.0PiB"),
        (3000 * 1024**5, "3000PiB"),
    ],
)
def test_human_bytes_large(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_backup_status_writes_the_size_with_the_bytes() -> None:
    status = BackupStatus.model_validate({"sizeBytes": 2370508919, "size": "stale"})
    wire = status.to_wire()
    assert (wire["sizeBytes"], wire["size"]) == (2370508919, "2.2GiB")
    status.size_bytes = 1536
    assert status.to_wire()["size"] == "1.5KiB"
    assert "size" not in BackupStatus().to_wire()


def test_table_is_human_and_json_is_raw() -> None:
    obj = {
        "metadata": {"name": "big", "namespace": "shop", "creationTimestamp": "2025-01-02T11:00Z"},
        "status": {"phase": "Succeeded", "sizeBytes": 2370508919},
    }
    now = output.parse_time("2025-01-02T12:00:00Z")
    assert now is not None
    row = output.backup_table([obj], now, all_namespaces=False).splitlines()[1].split()
    assert row[:3] == ["big", "Succeeded", "2.2GiB"]
    assert json.loads(output.dump(obj, "json"))["status"]["sizeBytes"] == 2370508919


# --- every command the docs and --help show parses ----------------------------------------

CONSOLE = re.compile(r"^( *)```console\n(.*?)^\1```", re.S | re.M)
INLINE = re.compile(r"`((?:kubectl )?safehold [^`]+)`")
PLACEHOLDER = re.compile(r"<|\.\.\.|…")


def _commands(text: str) -> list[str]:
    """`$ safehold …` and `$ kubectl safehold …` lines of console blocks (continuations joined,
    pipes, redirections and comments cut)."""
    found = []
    for indent, block in CONSOLE.findall(text):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = raw[len(indent) :].strip()
            if line.startswith(("$ safehold ", "$ kubectl safehold ")):
                found.append(re.split(r"\s(?:\||>|#|&&)\s?", line[2:])[0].strip())
    return found


def _inline(text: str) -> list[str]:
    """Inline commands of the prose that carry a flag (the others name a command)."""
    found = []
    for match in INLINE.findall(text):
        command = " ".join(match.split())
        if " -" in command and not PLACEHOLDER.search(command):
            found.append(command)
    return found


def _documented() -> list[tuple[str, str]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for command in [*_commands(text), *_inline(text)]:
            found.append((str(path.relative_to(REPO)), command))
    return found


def _help_examples() -> list[tuple[str, str]]:
    found = []
    parsers: list[tuple[str, argparse.ArgumentParser]] = [("safehold", build_parser())]
    while parsers:
        name, parser = parsers.pop()
        joined = re.sub(r"\s*\\\n\s*", " ", parser.epilog or "")
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("safehold ") and not PLACEHOLDER.search(line):
                command = re.split(r"\s{2,}|\s(?:\||>|#)\s?", line)[0].strip()
                found.append((f"{name} --help", command))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += [(f"{name} {n}", p) for n, p in action.choices.items()]
    return found


DOCUMENTED = _documented()
HELP_EXAMPLES = _help_examples()


def test_the_docs_show_commands() -> None:
    where = {path for path, _ in DOCUMENTED}
    assert {"docs/cli.md", "docs/disaster-recovery.md", "README.md"} <= where
    assert len(DOCUMENTED) >= 30
    assert any(c.startswith("safehold -n safehold-system restore") for _, c in DOCUMENTED)
    assert any(c.startswith("kubectl safehold -n") for _, c in DOCUMENTED)
    assert len(HELP_EXAMPLES) >= 15


@pytest.mark.parametrize(
    ("where", "command"),
    [*DOCUMENTED, *HELP_EXAMPLES],
    ids=[f"{w}: {c}" for w, c in [*DOCUMENTED, *HELP_EXAMPLES]],
)
def test_documented_command_parses(where: str, command: str) -> None:
    argv = shlex.split(command)
    argv = argv[2:] if argv[0] == "kubectl" else argv[1:]
    try:
        args = build_parser().parse_args(argv)
        apply_global_flags(args)
    except SystemExit as exc:  # argparse's usage error
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")
    except CliError as err:
        pytest.fail(f"{where}: `{command}`: {err}")


@pytest.mark.parametrize(
    ("where", "command"),
    [(w, c) for w, c in DOCUMENTED if c.startswith("safehold ") and c.endswith("-o yaml")],
)
def test_documented_yaml_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str], where: str, command: str
) -> None:
    """Where the docs show a command with `-o yaml` and then the YAML, it is what it prints."""
    text = (REPO / where).read_text()
    code, out, err = run(capsys, *shlex.split(command)[1:])
    assert code == 0, err
    following = FENCE_AFTER.search(text[_index(text, command) :])
    assert following is not None, f"{where}: no YAML after `{command}`"
    assert yaml.safe_load(out) == yaml.safe_load(following.group(1)), where


FENCE_AFTER = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _index(text: str, command: str) -> int:
    """Where `command` (written over several lines with `\\`) starts in `text`."""
    pattern = r"\s+(?:\\\s+)?".join(re.escape(word) for word in command.split())
    found = re.search(pattern, text)
    assert found is not None, command
    return found.start()
