"""Shared plumbing of the resource commands: errors, argument types, API calls, --wait.

Kept free of heavy imports at module level (kubernetes, pydantic) so `safehold --help` stays
fast; those are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
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


def connection_parent() -> argparse.ArgumentParser:
    """--kubeconfig, --context, -n/--namespace: accepted by every resource command."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("cluster")
    group.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n",
        "--namespace",
        help="namespace (default: the namespace of the context, else `default`)",
    )
    return parent


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
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until condition Complete is True; returns the exit code (0, 1, or 3 on timeout)."""
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
                return EXIT_OK
            print(f"error: {what} {text}", file=sys.stderr)
            return EXIT_FAILED
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
