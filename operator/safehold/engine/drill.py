"""One BackupVerification: a restore drill. Pick the backup (named, or the policy's newest
restorable one: never a Corrupt one), restore it with the restore plan into scratch
namespaces the operator owns, run the checks, record the verdict on the drill, the Backup and
its catalog entry, and remove what the drill created (also when a drill is resumed after an
operator restart: it starts over, in new scratch namespaces, after removing the old ones).

A drill never writes into a repository and never touches the backup's own namespaces.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from safehold.api.backup import BackupStatus
from safehold.api.base import LocalObjectReference
from safehold.api.durations import parse_duration
from safehold.api.errors import Failure
from safehold.api.kinds import VERIFICATION
from safehold.api.restore import DatabaseRestore, RestoreRequestSpec, VolumeRestore
from safehold.api.verification import (
    BackupVerificationSpec,
    BackupVerificationState,
    BackupVerificationStatus,
    CheckStatus,
)
from safehold.engine import drill_checks, drill_scratch
from safehold.engine.drill_data import DrillData
from safehold.engine.gateway import Gateway
from safehold.engine.locations import load_location, store_failed
from safehold.engine.metrics import observe_drill
from safehold.engine.restore import (
    ManifestMissing,
    Source,
    StageRunner,
    fetch_index,
    read_source,
    resolve_backup,
)
from safehold.engine.restore_apply import Applier, Results
from safehold.engine.restore_data import DataRestorer
from safehold.engine.runs import OneShotRun
from safehold.engine.settings import operator_namespace, scratch_dir
from safehold.engine.verdicts import record_verdict
from safehold.kube.clients import Clients
from safehold.kube.resources import patch_status
from safehold.kube.rest import ApiError
from safehold.planning import drills
from safehold.planning.conditions import get_condition
from safehold.planning.restore import plan_restore
from safehold.planning.runs import running
from safehold.planning.selection import Scope

log = logging.getLogger(__name__)


class DrillGone(Exception):
    """The BackupVerification was deleted (or replaced) while it ran: stop, record nothing."""


class DrillRun(OneShotRun[BackupVerificationStatus]):
    info = VERIFICATION
    status_model = BackupVerificationStatus

    def __init__(self, clients: Clients, body: dict[str, object], gateway: Gateway) -> None:
        super().__init__(clients, body, gateway)
        self.uid: str = self.body["metadata"]["uid"]
        self.checks: list[CheckStatus] = []
        self.backup_status: BackupStatus | None = None

    def _run(self) -> None:
        try:
            self._run_drill()
        except DrillGone:
            log.info("drill %s/%s was deleted while it ran: stopped", self.namespace, self.name)
            drill_scratch.remove_scratch(
                self.clients.rest, self.status.scratch_namespaces, self.uid, wait=False
            )

    def _write(self) -> None:
        try:
            super()._write()
        except ApiError as err:
            if err.status == 404:
                raise DrillGone from None
            raise

    def _still_here(self) -> None:
        body = self.clients.rest.get_or_none(VERIFICATION.path(self.namespace, self.name))
        if body is None or body["metadata"].get("uid") != self.uid:
            raise DrillGone

    # ---- the run ------------------------------------------------------------------------
    def _run_drill(self) -> None:
        self.spec = BackupVerificationSpec.model_validate(self.body.get("spec") or {})
        left = self._clean_earlier_attempt()
        now = datetime.now(UTC)
        self.status = BackupVerificationStatus(
            start_time=now, conditions=self.status.conditions, scratch_databases=left
        )
        if left:
            self.status.warnings.append(
                "scratch databases of an interrupted attempt could not be dropped: "
                + ", ".join(left)
            )
        self.deadline = time.monotonic() + parse_duration(self.spec.timeout).total_seconds()
        self.status.policy = self.spec.policy_ref.name if self.spec.policy_ref else None
        try:
            name, backup_status = resolve_backup(
                self.clients,
                self.namespace,
                self.spec.backup_ref.name if self.spec.backup_ref else None,
                self.spec.policy_ref.name if self.spec.policy_ref else None,
            )
        except Failure as err:
            self._finish("Failed", err.reason, err.message)
            return
        self.status.backup = name
        self.backup_status = backup_status
        self.status.policy = self.status.policy or backup_status.policy
        self.status.backup_age_seconds = drills.backup_age_seconds(
            backup_status.completion_time, now
        )
        self._say(f"drilling Backup {name}")
        source = self._source(name, backup_status)
        if source is not None:
            self._drill(source)
        self._conclude(source)

    def _source(self, name: str, backup_status: BackupStatus) -> Source | None:
        started = time.monotonic()
        try:
            source = read_source(self.clients, self.namespace, name, backup_status)
        except ManifestMissing as err:
            self._check_failed("manifest", "ManifestMissing", err.message, started)
            return None
        except Failure as err:
            self._check_failed("manifest", err.reason, err.message, started)
            return None
        self.checks.append(
            CheckStatus(
                name="manifest",
                result="Passed",
                message=f"catalog entry of Backup {name} is present and restorable",
                duration_seconds=round(time.monotonic() - started, 3),
            )
        )
        return source

    def _check_failed(self, name: str, reason: str, message: str, started: float) -> None:
        self.checks.append(
            CheckStatus(
                name=name,
                result="Failed",
                reason=reason,
                message=message,
                duration_seconds=round(time.monotonic() - started, 3),
            )
        )

    def _drill(self, source: Source) -> None:
        attempt = f"{self.status.start_time:%Y%m%d%H%M%S%f}"
        mapping = {
            # New names per attempt: a resumed drill never waits for the old ones to go.
            ns: drills.scratch_namespace(self.namespace, self.name, f"{self.uid}@{attempt}", ns)
            for ns in source.manifest.namespaces
        }
        self.status.scratch_namespaces = sorted(mapping.values())
        self._write()  # before creating them: a restarted operator knows what to remove
        workdir = scratch_dir() / "drills" / self.namespace / f"{self.name}-{self.uid}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        data = DrillData(self, source, mapping)
        try:
            for ns, scratch in mapping.items():
                drill_scratch.create_scratch(
                    self.clients.rest, scratch, self.namespace, self.name, self.uid, ns
                )
            self._restore_and_check(source, mapping, workdir, data)
        except Failure as err:
            named = store_failed(self.clients, source.location, err)
            self._check_failed("restore", named.reason, named.message, time.monotonic())
        except DrillGone:
            raise
        except Exception as err:  # never skip the clean-up and the verdict
            log.exception("drill %s/%s failed unexpectedly", self.namespace, self.name)
            message = f"{type(err).__name__}: {err}"
            self._check_failed("drill", "InternalError", message, time.monotonic())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _restore_and_check(
        self, source: Source, mapping: dict[str, str], workdir: Path, data: DrillData
    ) -> None:
        checks = self.spec.checks
        started = time.monotonic()
        self._say("restoring into " + ", ".join(sorted(mapping.values())))
        entries = drills.drill_entries(fetch_index(source, self.namespace, workdir))
        spec = RestoreRequestSpec(
            backup_ref=LocalObjectReference(name=source.backup),
            namespace_mapping=mapping,
            volumes=VolumeRestore(enabled=True),
            databases=DatabaseRestore(enabled=False),
        )
        scope = Scope(self.namespace, operator_namespace(), frozenset(mapping.values()))
        volumes, left_out = drills.drill_volumes(source.manifest.volumes)
        for pvc in left_out:
            self.status.warnings.append(
                f"PVC {pvc} not drilled: its snapshot-mode data is a VolumeSnapshot of its own "
                "namespace, which a scratch namespace cannot use"
            )
        plan = plan_restore(entries, spec, volumes, [], scope)
        results = Results()
        runner = StageRunner(
            Applier(self.clients.rest, spec, self.name, results, workdir, drills.harmless),
            DataRestorer(
                self.clients,
                self.gateway,
                spec,
                self.namespace,
                self.name,
                source.location,
                [],
                verify_files=checks.content,
            ),
            self._say,
        )
        runner.run(plan, lambda index, phase, counts: None)
        self.checks.append(_restore_check(results, runner, started))
        if checks.content:
            self.checks.append(
                drill_checks.timed(
                    "content",
                    lambda: drill_checks.content(source.manifest, entries, workdir, runner.volumes),
                )
            )
        self._still_here()
        ready = self._workloads(sorted(mapping.values()))
        self.status.restore_seconds = round(ready - started, 3) if ready else None
        self.status.rto = drills.human_duration(self.status.restore_seconds)
        self.checks += data.repository_check()
        self.checks += data.database_checks()
        self._probes(sorted(mapping.values()), mapping.get(self.namespace))

    def _workloads(self, namespaces: list[str]) -> float | None:
        """The workloads check; returns when every restored item was in place (None when
        the workloads never became Ready)."""
        if not self.spec.checks.workloads:
            self.checks.append(
                drill_checks.skipped("workloads", "NotRequested", "checks.workloads is false")
            )
            return time.monotonic()
        total, _ = drill_checks.workloads_pending(self.clients.rest, namespaces)
        if total and self._remaining() <= 0:
            late = "the drill ran out of time before the workloads were checked"
            self.checks.append(drill_checks.skipped("workloads", "DrillTimedOut", late))
            return None
        if total == 0:
            self.checks.append(
                drill_checks.skipped(
                    "workloads", "NoWorkloads", "the backup holds no Deployment or StatefulSet"
                )
            )
            return time.monotonic()
        self._say(f"waiting for {total} workload(s) to become Ready")
        timeout = min(
            parse_duration(self.spec.checks.workload_timeout).total_seconds(), self._remaining()
        )
        check = drill_checks.timed(
            "workloads", lambda: drill_checks.workloads(self.clients.rest, namespaces, timeout)
        )
        self.checks.append(check)
        return time.monotonic() if check.result == "Passed" else None

    def _probes(self, namespaces: list[str], own: str | None) -> None:
        where = own or namespaces[0]
        for probe in self.spec.checks.probes:
            if self._remaining() <= 0:
                self.checks.append(
                    drill_checks.skipped(
                        f"probe:{probe.name}", "DrillTimedOut", "the drill ran out of time"
                    )
                )
                continue
            self._say(f"running probe {probe.name}")
            self.checks.append(
                drill_checks.timed(
                    f"probe:{probe.name}",
                    functools.partial(
                        drill_checks.probe,
                        self.clients.rest,
                        probe,
                        where,
                        self.name,
                        self._remaining(),
                    ),
                )
            )

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    # ---- the end --------------------------------------------------------------------------
    def _conclude(self, source: Source | None) -> None:
        self._still_here()  # a drill deleted meanwhile says nothing about the backup
        verdict = drills.verdict(self.checks)
        if self._remaining() < 0:
            late = f"the drill ran past its timeout {self.spec.timeout}"
            if not verdict.passed:
                late += f"; {verdict.message}"
            result = "VerificationFailed" if verdict.passed else verdict.backup_result
            verdict = drills.Verdict(False, "DrillTimedOut", late, result)
        self.status.checks = self.checks
        self.status.result = "Passed" if verdict.passed else "Failed"
        keep = None if verdict.passed else self.spec.keep_on_failure
        if keep is not None and self.status.scratch_namespaces:
            self.status.keep_until = datetime.now(UTC) + parse_duration(keep)
            self.status.scratch_removed = False
            self.status.warnings.append(
                f"scratch namespaces kept until {self.status.keep_until:%Y-%m-%dT%H:%M:%SZ}"
            )
        else:
            # Deleted now, waited for after the verdict is out (_finished): a namespace takes
            # a while to go, and the drill's result does not depend on it.
            self.status.scratch_removed = drill_scratch.remove_scratch(
                self.clients.rest, self.status.scratch_namespaces, self.uid, wait=False
            )
        self._record_on_backup(source, verdict)
        self._finish("Succeeded" if verdict.passed else "Failed", verdict.reason, verdict.message)

    def _record_on_backup(self, source: Source | None, verdict: drills.Verdict) -> None:
        if self.status.backup is None or self.backup_status is None:
            return
        location = source.location if source is not None else None
        if location is None:  # the manifest is gone: the Backup's status still says so
            try:
                location = load_location(
                    self.clients,
                    self.namespace,
                    self.backup_status.storage_location or "",
                    need_write=False,
                )
            except Failure as err:
                self.status.warnings.append(f"verdict not recorded on the Backup: {err.message}")
                return
        state = BackupVerificationState(
            result=verdict.backup_result,
            time=datetime.now(UTC),
            verification=self.name,
            message=verdict.message[:1024],
        )
        try:
            record_verdict(
                self.clients,
                location,
                self.namespace,
                self.status.backup,
                state,
                clears_corrupt=verdict.passed,
            )
        except Exception as err:  # the drill's own result stands
            self.status.warnings.append(f"could not record the verdict on the Backup: {err}")

    def _finished(self, outcome: str) -> None:
        if self.status.scratch_removed is False and self.status.keep_until is None:
            gone = drill_scratch.remove_scratch(
                self.clients.rest, self.status.scratch_namespaces, self.uid
            )
            if gone:  # else the scheduler's sweep keeps deleting them
                self.status.scratch_removed = True
                patch_status(
                    self.clients.custom, VERIFICATION, self.namespace, self.name,
                    {"scratchRemoved": True},
                )  # fmt: skip
        observe_drill(
            self.namespace,
            self.status.policy,
            self.status.result or "Failed",
            self.status.restore_seconds,
            self.status.checks,
            self.status.completion_time or datetime.now(UTC),
        )

    def _clean_earlier_attempt(self) -> list[str]:
        """A drill resumed after an operator restart removes what its first attempt made;
        returns the scratch databases still there."""
        if self.status.start_time is None:
            return []
        drill_scratch.remove_scratch(self.clients.rest, self.status.scratch_namespaces, self.uid)
        return DrillData.drop_leftovers(self)

    def _say(self, message: str) -> None:
        current = get_condition(self.status.conditions, "Succeeded")
        if current is not None and current.message == message:
            return
        self.status.conditions = running(
            self.status.conditions, message, self.generation, datetime.now(UTC)
        )
        try:
            self._write()
        except DrillGone:
            raise
        except Exception:  # progress is best effort
            log.debug("drill progress update failed", exc_info=True)


def _restore_check(results: Results, runner: StageRunner, started: float) -> CheckStatus:
    c = results.counts
    failed_volumes = [v for v in runner.volumes if v.result == "Failed"]
    message = (
        f"{c.created} object(s) created, {c.skipped} skipped, {c.failed} failed; "
        f"{len(runner.volumes) - len(failed_volumes)} of {len(runner.volumes)} PVC(s) restored"
    )
    problems = results.errors[:3] + [f"PVC {v.pvc}: {v.message}" for v in failed_volumes[:3]]
    passed = c.failed == 0 and not failed_volumes
    if not passed:
        message += ": " + "; ".join(problems)
    reason = "RestoreFailed"
    if failed_volumes and not c.failed:
        reason = drills.volume_reason(failed_volumes[0].message)
    return CheckStatus(
        name="restore",
        result="Passed" if passed else "Failed",
        reason=None if passed else reason,
        message=message,
        duration_seconds=round(time.monotonic() - started, 3),
    )
