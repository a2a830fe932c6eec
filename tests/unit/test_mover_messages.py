"""What the database movers say and read: MariaDB's account script (which statement is about
which account, what a warning may show), the private redis-server's log, and that no message
names a mover variable instead of the RestoreRequest field."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.contract import env as menv
from safehold.contract.result import MoverError
from safehold.movers import db_dump, dbtools, mysql_accounts, redis

SCRIPT = """/*!40101 SET NAMES utf8mb4 */;
CREATE USER IF NOT EXISTS `root`@`localhost` IDENTIFIED VIA mysql_native_password USING 'invalid' OR unix_socket;
CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED BY PASSWORD '*77E072B971ED1916F857E084A32D0F344807968C';
CREATE USER IF NOT EXISTS `rep``x`@`10.%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227';
CREATE ROLE IF NOT EXISTS mariadb_dump_import_role;
GRANT mariadb_dump_import_role TO CURRENT_USER();
GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION;
GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*77E072B971ED1916F857E084A32D0F344807968C';
GRANT SELECT ON `shop`.`a TO b` TO `rep``x`@`10.%`;
/*M!100005 SET DEFAULT ROLE NONE FOR 'app'@'%' */;
/*!80001 ALTER USER 'app'@'%' DEFAULT ROLE NONE */;
DROP ROLE mariadb_dump_import_role;"""  # noqa: E501 - lines as mariadb-dump writes them


def test_each_statement_names_its_account() -> None:
    lines = SCRIPT.splitlines()
    assert [mysql_accounts.subject(line) for line in lines] == [
        None,
        ("root", "localhost"),
        ("app", "%"),
        ("rep`x", "10.%"),
        ("mariadb_dump_import_role", ""),
        None,
        ("root", "localhost"),
        ("app", "%"),
        ("rep`x", "10.%"),  # " TO " inside a quoted table name is not the grantee
        ("app", "%"),
        ("app", "%"),
        None,
    ]


def test_existing_accounts_are_left_out_and_named() -> None:
    existing = [("root", "localhost"), ("app", "%"), ("mariadb.sys", "localhost")]
    replay = mysql_accounts.plan(SCRIPT, existing, connecting="safehold")
    assert not any("`app`" in s or "'app'" in s or "`root`" in s for s in replay.statements)
    assert sum("rep``x" in s for s in replay.statements) == 2
    assert replay.left == [("app", "%")]  # root is a system account: not worth a warning
    assert mysql_accounts.plan(SCRIPT, existing, connecting="app").left == []


def test_warnings_name_the_grant_without_its_hash() -> None:
    statements = SCRIPT.splitlines()
    stderr = (
        "ERROR 1146 (42S02) at line 9: Table 'shop.a TO b' doesn't exist\n"
        "ERROR 1045 (28000) at line 3: Access denied\n"
        "ERROR 2013 (HY000) at line 99: Lost connection\n"
    )
    replay = mysql_accounts.Replay(statements)
    replay.failed = mysql_accounts.errors(stderr, statements)
    assert mysql_accounts.warnings(replay) == [
        "accounts: GRANT SELECT ON `shop`.`a TO b` TO `rep``x`@`10.%` failed: 1146 (42S02):"
        " Table 'shop.a TO b' doesn't exist",
        "accounts: CREATE USER IF NOT EXISTS `app`@`%` IDENTIFIED … failed: 1045 (28000):"
        " Access denied",
        "accounts: 2013 (HY000): Lost connection",
    ]


def test_failed_statements_are_retried_and_only_what_still_fails_remains() -> None:
    statements = SCRIPT.splitlines()
    replay = mysql_accounts.Replay(statements)
    replay.failed = [(statements[8], "1146 (42S02): missing"), (statements[2], "1045: no")]
    scripts: list[str] = []

    def runner(script: str) -> tuple[int, str]:
        scripts.append(script)
        return 1, "ERROR 1045 (28000) at line 2: Access denied\n"

    mysql_accounts.retry_failed(replay, runner)
    assert scripts == [f"{statements[8]}\n{statements[2]}\n"]
    assert replay.failed == [(statements[2], "1045 (28000): Access denied")]


def test_redis_log_reason_is_the_servers_warning(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text(
        "26512:C 02 Dec 2026 00:05:11.919 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo\n"
        "26512:M 02 Dec 2026 00:05:11.919 * Running mode=standalone, port=0.\n"
        "26512:M 02 Dec 2026 00:05:11.919 # Server initialized\n"
        "26512:M 02 Dec 2026 00:05:11.919 # Can't handle RDB format version 12\n"
        "26512:M 02 Dec 2026 00:05:11.919 # Fatal error loading the DB: Invalid argument.\n"
    )
    assert redis.server_log_reason(log) == (
        "Server initialized; Can't handle RDB format version 12; "
        "Fatal error loading the DB: Invalid argument."
    )
    log.write_text("x" * 5000 + "\n")
    assert len(redis.server_log_reason(log)) <= redis.LOG_CHARS + 1
    assert redis.server_log_reason(tmp_path / "missing.log") == "the server left no log"


def _cfg(**extra: str) -> menv.DbConfig:
    env = {
        menv.DB_TYPE: "redis",
        menv.DB_HOST: "r",
        menv.BACKUP: "ns/b",
        menv.TARGET: "t",
    }
    return menv.from_environment(env | extra)


def test_refusal_names_the_restore_request_field_not_a_mover_variable() -> None:
    with pytest.raises(MoverError) as refused:
        dbtools.refuse_existing(_cfg(), ["app"])
    assert refused.value.reason == "DatabaseExists"
    assert "spec.databases.targets[].clean: true" in refused.value.message
    assert "SAFEHOLD_" not in refused.value.message
    dbtools.refuse_existing(_cfg(**{menv.DB_RESTORE_CLEAN: "true"}), ["app"])


def test_redis_mapping_must_name_logical_databases() -> None:
    assert redis.destinations(_cfg(**{menv.DB_MAPPING: "0:5"}), [0, 1]) == {0: 5, 1: 1}
    with pytest.raises(MoverError) as bad:
        redis.destinations(_cfg(**{menv.DB_MAPPING: "0:cache"}), [0])
    assert bad.value.reason == "InvalidDatabaseMapping"
    assert bad.value.message.startswith("databaseMapping:")


def test_a_waiting_restore_reports_each_attempt_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _cfg(**{menv.DB_READY_TIMEOUT: "30", menv.DB_PASSWORD: "hunter2-secret"})
    calls = {"n": 0}

    def probe(_: menv.DbConfig) -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise MoverError("HostUnreachable", "refused; password hunter2-secret")
        return "up"

    reports: list[dict[str, object]] = []
    attempts, probed = dbtools.wait_until_ready(
        probe, cfg, sleep=lambda _: None, report=reports.append
    )
    assert (attempts, probed) == (3, "up")
    assert [r["attempts"] for r in reports] == [1, 2]
    assert reports[0]["address"] == "r:6379"
    assert reports[0]["phase"] == "waiting"
    assert str(reports[0]["lastError"]).startswith("HostUnreachable: refused")
    db_dump._progress(cfg, reports[0])
    line = capsys.readouterr().out
    assert line.startswith('{"progress":{"phase":"waiting"')
    assert "hunter2-secret" not in line
