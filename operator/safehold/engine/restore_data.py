"""The data stages of a restore: PVC data (volumes stage) and database targets (databases
stage), each through mover Jobs in the RestoreRequest's namespace."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from safehold.api.backup import DatabaseResult, VolumeResult
from safehold.api.content import DatabaseTarget, Volumes
from safehold.api.labels import LABEL_RESTORED_BY
from safehold.api.restore import DatabaseRestore, RestoreRequestSpec, VolumeRestore
from safehold.engine.databases import StatusFn, restore_target
from safehold.engine.gateway import Gateway
from safehold.engine.movers import MoverLauncher
from safehold.engine.volumes import restore_volume, task_for_restore
from safehold.kube.clients import Clients
from safehold.planning.names import label_value
from safehold.planning.restore import PlannedVolume
from safehold.storage.location import ResolvedLocation

PARALLEL_VOLUMES = 4


class DataRestorer:
    def __init__(
        self,
        clients: Clients,
        gateway: Gateway,
        spec: RestoreRequestSpec,
        namespace: str,
        name: str,
        location: ResolvedLocation,
        targets: Sequence[DatabaseTarget],
        verify_files: bool = False,
    ) -> None:
        self.verify_files = verify_files
        """Have restic read every restored file back (a drill's content check)."""
        self.spec = spec
        self.namespace = namespace
        self.name = name
        self.targets = {t.name: t for t in targets}
        self.launcher = MoverLauncher(clients, gateway, location, namespace, name)

    def volumes(self, planned: Sequence[PlannedVolume]) -> list[VolumeResult]:
        if self.spec.dry_run:
            return [
                v.backed_up.model_copy(
                    update={"result": "Skipped", "message": "dry run: would restore"}
                )
                for v in planned
            ]
        wanted = self.spec.volumes or VolumeRestore()
        settings = Volumes(parallelism=PARALLEL_VOLUMES)
        labels = {LABEL_RESTORED_BY: label_value(self.name)}

        def one(v: PlannedVolume) -> VolumeResult:
            task = task_for_restore(v.backed_up, v.target_namespace)
            return restore_volume(
                self.launcher,
                settings,
                v.backed_up,
                task,
                wanted.overwrite_existing,
                labels,
                self.verify_files,
            )

        with ThreadPoolExecutor(max_workers=PARALLEL_VOLUMES) as pool:
            return list(pool.map(one, planned))

    def databases(
        self, dumped: Sequence[DatabaseResult], on_status: StatusFn | None = None
    ) -> list[DatabaseResult]:
        """Restore the dumped targets one after the other; `on_status` hears what each
        waits for."""
        if self.spec.dry_run:
            return [
                d.model_copy(update={"result": "Skipped", "message": "dry run: would restore"})
                for d in dumped
            ]
        wanted = self.spec.databases or DatabaseRestore()
        overrides = {t.target: t for t in wanted.targets}
        return [
            restore_target(
                self.launcher,
                self.namespace,
                d,
                self.targets.get(d.target),
                overrides.get(d.target),
                wanted.target_ready_timeout,
                on_status,
            )
            for d in dumped
        ]
