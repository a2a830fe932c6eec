"""The one place that knows where things live inside a location's bucket.

<prefix>/repositories/<namespace>/           restic repository of one namespace's backups
<prefix>/namespace-repositories/<owner>/<source>/   volume data of namespace <source> taken
                                              by backups of namespace <owner> (its own
                                              password, derived from the location's)
<prefix>/scratch-repositories/<id>/           short-lived copy of one snapshot for a restore
                                              into another namespace (removed afterwards)
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

    @staticmethod
    def repository(namespace: str) -> str:
        """Key (below the prefix) of the repository of a namespace's backups."""
        return f"repositories/{namespace}"

    @staticmethod
    def namespace_repository(owner: str, source: str) -> str:
        """Key of the repository holding namespace `source`'s volume data for backups of
        namespace `owner` (the owner's own repository when they are the same)."""
        if owner == source:
            return BucketLayout.repository(owner)
        return f"namespace-repositories/{owner}/{source}"

    @staticmethod
    def scratch_repository(run_id: str) -> str:
        return f"scratch-repositories/{run_id}"

    def repository_key(self, namespace: str) -> str:
        return self.key(self.repository(namespace))

    def restore_results_key(self, namespace: str, backup: str, restore: str) -> str:
        return self.key("backups", namespace, backup, "restores", f"{restore}.json")

    def manifest_key(self, namespace: str, backup: str) -> str:
        return self.key("backups", namespace, backup, "backup.json")

    def probe_key(self, token: str) -> str:
        return self.key(".safehold", "probe", token)
