"""Shared plumbing of the resource commands: errors, argument types, API calls, --wait.

Kept free of heavy imports at module level (kubernetes, pydantic) so `safehold --help` stays
fast; those are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes import client

GROUP = "safehold.io"
VERSION = "v1alpha1"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3


class CliError(Exception):
    """An error reported as one line on stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ResourceKind:
    """What the CLI needs to know about one custom resource kind."""

    kind: str
    plural: str

    @property
    def qualified(self) -> str:
        """The `plural.group` name kubectl prints, e.g. backup.safehold.io."""
        return f"{self.kind.lower()}.{GROUP}"


BACKUPS = ResourceKind("Backup", "backups")
RESTORES = ResourceKind("RestoreRequest", "restorerequests")
LOCATIONS = ResourceKind("BackupStorageLocation", "backupstoragelocations")
VERIFICATIONS = ResourceKind("BackupVerification", "backupverifications")


# --- argument types ---------------------------------------------------------------------


def comma_list(text: str) -> list[str]:
    """`a,b,c` -> ["a", "b", "c"]; empty items are an error."""
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def label_selector(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {"k": "v", "k2": "v2"} (equality only, as matchLabels)."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if value.startswith("="):  # k==v is accepted by kubectl as well
            value = value[1:]
        if not sep or not key or key.endswith("!"):
            raise argparse.ArgumentTypeError(
                f"expected key=value[,key=value...], got {text!r}"
                " (only equality selectors are supported)"
            )
        labels[key] = value
    return labels


def namespace_pair(text: str) -> tuple[str, str]:
    """`from:to` -> ("from", "to")."""
    source, sep, target = text.partition(":")
    if not sep or not source or not target or ":" in target:
        raise argparse.ArgumentTypeError(f"expected FROM:TO, got {text!r}")
    return source, target


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def target_name(text: str) -> str:
    """The name of a database target of the backup (a DNS label, as in the Backup)."""
    if len(text) > 63 or not _DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a database target name (lower case letters, digits and '-', "
            "as in the backup's databases[].target)"
        )
    return text


def _target_and(text: str, sep: str, shape: str) -> tuple[str, str]:
    target, found, rest = text.partition(sep)
    if not found or not rest:
        raise argparse.ArgumentTypeError(f"expected {shape}, got {text!r}")
    return target_name(target), rest


def database_mapping(text: str) -> tuple[str, str, str]:
    """`TARGET:FROM=TO` -> (target, "FROM", "TO")."""
    shape = "TARGET:FROM=TO (restore database FROM of the target as TO)"
    target, rest = _target_and(text, ":", shape)
    source, found, new = rest.partition("=")
    if not found or not source or not new:
        raise argparse.ArgumentTypeError(f"expected {shape}, got {text!r}")
    return target, source, new


def target_value(text: str) -> tuple[str, str]:
    """`TARGET=VALUE` -> (target, "VALUE")."""
    return _target_and(text, "=", "TARGET=VALUE")


def target_host(text: str) -> tuple[str, str, int | None]:
    """`TARGET=HOST[:PORT]` (`[::1]:5432` for an IPv6 address) -> (target, host, port)."""
    target, address = _target_and(text, "=", "TARGET=HOST[:PORT]")
    host, port = address, ""
    if address.startswith("["):
        host, _, after = address[1:].partition("]")
        port = after.removeprefix(":") if after.startswith(":") else after
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    if not host or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise argparse.ArgumentTypeError(
            f"expected TARGET=HOST[:PORT] with a port from 1 to 65535, got {text!r}"
        )
    return target, host, int(port) if port else None


TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


def target_tls(text: str) -> tuple[str, str, str | None]:
    """`TARGET=MODE[:CA_SECRET]` -> (target, mode, ca secret or None)."""
    target, rest = _target_and(text, "=", "TARGET=MODE[:CA_SECRET]")
    mode, _, ca_secret = rest.partition(":")
    if mode not in TLS_MODES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: TLS mode must be one of {', '.join(TLS_MODES)}"
        )
    return target, mode, ca_secret or None


def ready_timeout(text: str) -> str:
    """A database target ready timeout: a duration from 0s to 24h, kept as written."""
    from safehold.api.durations import PATTERN, parse_duration

    try:
        seconds = parse_duration(text).total_seconds() if re.fullmatch(PATTERN, text) else -1
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= 24 * 3600:
        raise argparse.ArgumentTypeError(
            f"expected a duration from 0s to 24h such as 90s, 10m or 1h30m, got {text!r}"
        )
    return text


def duration_seconds(text: str) -> float:
    """A Go-style duration ("90s", "30m", "1h30m") in seconds."""
    from safehold.api.durations import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return seconds


# --- shared flags -----------------------------------------------------------------------


# The flags every resource command takes; they also work before the command
# (`safehold -n NS restore create ...`), as kubectl's global flags do.
CONNECTION_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "kubeconfig": (("--kubeconfig",), "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"),
    "context": (("--context",), "kubeconfig context (default: the current context)"),
    "namespace": (
        ("-n", "--namespace"),
        "namespace (default: the namespace of the context, else `default`)",
    ),
}
GLOBAL_PREFIX = "global_"


def add_connection_flags(group: argparse._ActionsContainer, *, prefix: str = "") -> None:
    """Add the connection flags; with a prefix their values land in `<prefix><name>`."""
    for name, (flags, help_text) in CONNECTION_FLAGS.items():
        metavar = "NS" if name == "namespace" else name.upper()
        group.add_argument(*flags, dest=prefix + name, metavar=metavar, help=help_text)


def connection_parent() -> argparse.ArgumentParser:
    """--kubeconfig, --context, -n/--namespace: accepted by every resource command."""
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_flags(parent.add_argument_group("cluster"))
    return parent


def apply_global_flags(args: argparse.Namespace) -> None:
    """Give the flags written before the command to the command; a flag written after the
    command wins (the later flag, as with kubectl). Raises CliError (usage) when the command
    takes no such flag."""
    given = {
        name: value
        for name in CONNECTION_FLAGS
        if (value := getattr(args, GLOBAL_PREFIX + name, None)) is not None
    }
    if not given:
        return
    if not all(hasattr(args, name) for name in CONNECTION_FLAGS):
        flags = ", ".join("/".join(CONNECTION_FLAGS[name][0]) for name in given)
        raise CliError(
            f"{flags} before `{args.command}`: `safehold {args.command}` does not take it; "
            f"see `safehold {args.command} --help`",
            code=EXIT_USAGE,
        )
    for name, value in given.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


# --- API access -------------------------------------------------------------------------


def api_error_message(err: Exception) -> str:
    """One line from an ApiException: the API server's own message when it sent one."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = ""
    if body:
        try:
            parsed = json.loads(body)
        except (TypeError, ValueError):
            parsed = None
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or "")
    if not message:
        reason = getattr(err, "reason", None) or str(err)
        message = f"{reason} (HTTP {status})" if status else str(reason)
    return " ".join(message.split())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Objects:
    """CustomObjectsApi calls for one kind, with API errors turned into CliError."""

    def __init__(self, api: client.CustomObjectsApi, kind: ResourceKind) -> None:
        self.api = api
        self.kind = kind

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            result: dict[str, Any] = fn(*args, **kwargs)
        except ApiException as err:
            raise CliError(api_error_message(err)) from None
        except OSError as err:  # connection refused, TLS, DNS
            raise CliError(f"cannot reach the API server: {one_line(str(err))}") from None
        except Exception as err:
            if type(err).__module__.startswith("urllib3"):
                raise CliError(f"cannot reach the API server: {one_line(str(err))}") from None
            raise
        return result

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(
            self.api.get_namespaced_custom_object, GROUP, VERSION, namespace, self.kind.plural, name
        )

    def create(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(
            self.api.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            self.kind.plural,
            dict(body),
        )

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch one object (metadata such as annotations)."""
        return self._call(
            self.api.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            self.kind.plural,
            name,
            dict(patch),
        )

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self._call(
                self.api.list_cluster_custom_object, GROUP, VERSION, self.kind.plural
            )
        else:
            result = self._call(
                self.api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                self.kind.plural,
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return sorted(
            items,
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )


# --- conditions and --wait --------------------------------------------------------------


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of that type in status.conditions, if any."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def is_complete(obj: Mapping[str, Any]) -> bool:
    cond = condition(obj, "Complete")
    return bool(cond and cond.get("status") == "True")


def outcome(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """(succeeded, one-line explanation) of a finished Backup or RestoreRequest."""
    cond = condition(obj, "Succeeded") or condition(obj, "Complete") or {}
    succeeded = cond.get("status") == "True"
    phase = (obj.get("status") or {}).get("phase") or ("Succeeded" if succeeded else "Failed")
    reason = cond.get("reason") or ""
    message = one_line(cond.get("message") or "")
    detail = ": ".join(part for part in (reason, message) if part)
    return succeeded, f"{phase}" + (f" ({detail})" if detail else "")


def wait_for_completion(
    objects: Objects,
    namespace: str,
    name: str,
    timeout: float,
    *,
    interval: float = 1.0,
    progress: Callable[[str], None] | None = None,
    report: Callable[[Mapping[str, Any], bool], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until condition Complete is True; returns the exit code (0, 1, or 3 on timeout).
    `report(obj, succeeded)` adds lines about the finished object after the outcome line."""
    what = f"{objects.kind.qualified}/{name}"
    deadline = clock() + timeout
    last_phase: str | None = None
    while True:
        obj = objects.get(namespace, name)
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        if progress is not None and phase != last_phase:
            progress(f"{what}: {phase}")
        last_phase = phase
        if is_complete(obj):
            succeeded, text = outcome(obj)
            if succeeded:
                print(f"{what} {text}")
            else:
                print(f"error: {what} {text}", file=sys.stderr)
            if report is not None:
                report(obj, succeeded)
            return EXIT_OK if succeeded else EXIT_FAILED
        remaining = deadline - clock()
        if remaining <= 0:
            print(
                f"error: timed out after {format_seconds(timeout)} waiting for {what} to complete"
                f" (phase {phase}); it keeps running, check it with `describe`",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        sleep(min(interval, remaining))


def format_seconds(seconds: float) -> str:
    """90 -> "1m30s", 3600 -> "1h0m0s" (Go style, whole seconds)."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s"


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
