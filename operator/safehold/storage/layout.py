"""The one place that knows where things live inside a location's bucket.

<prefix>/repositories/<namespace>/           restic repository of one namespace
<prefix>/backups/<namespace>/<backup>/backup.json   catalog manifest of one backup
<prefix>/.safehold/probe/<token>              short-lived write probe
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BucketLayout:
    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def repository_key(self, namespace: str) -> str:
        return self.key("repositories", namespace)

    def restore_results_key(self, namespace: str, backup: str, restore: str) -> str:
        return self.key("backups", namespace, backup, "restores", f"{restore}.json")

    def manifest_key(self, namespace: str, backup: str) -> str:
        return self.key("backups", namespace, backup, "backup.json")

    def probe_key(self, token: str) -> str:
        return self.key(".safehold", "probe", token)
