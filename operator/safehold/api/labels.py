"""Names of the labels, annotations and field manager Safehold puts on objects.

They are part of the API: users select by them, Argo CD and alert rules see them.
"""

from __future__ import annotations

from safehold import GROUP

FIELD_MANAGER = "safehold"
FINALIZER = f"operator.{GROUP}/finalizer"

LABEL_POLICY = "safehold.io/policy"
LABEL_RESTORED_BY = "safehold.io/restored-by"
# On every child object of a run (mover Jobs, their Secrets, VolumeSnapshots, temporary PVCs):
# the Backup or RestoreRequest it belongs to.
LABEL_BACKUP = "safehold.io/backup"
# "true" on every object that is Safehold's machinery (the run children above, the gateway's
# key Secret): never exported, never restored. Objects made before it existed are known by
# LABEL_BACKUP alone.
LABEL_INTERNAL = "safehold.io/internal"
MACHINERY_LABELS = (LABEL_INTERNAL, LABEL_BACKUP)
LABEL_COMPONENT = "app.kubernetes.io/component"
# On a Namespace (set by a cluster admin): "root" runs its volume movers as the root mover.
LABEL_VOLUME_MOVER = "safehold.io/volume-mover"
# Pod Security admission's level label: the root mover needs baseline or privileged.
LABEL_POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"

# On a ClusterRoleBinding a mapped restore created for the copies of its subjects: the name of
# the binding it copies (which keeps its own subjects).
ANNOTATION_COPY_OF = "safehold.io/copy-of"
ANNOTATION_SYNCED = "safehold.io/synced-from-storage"
# Any new value on a BackupPolicy starts one run.
ANNOTATION_TRIGGER = "safehold.io/trigger"
# "true" on a Backup deletes it and its data (same path as retention).
ANNOTATION_DELETE_REQUESTED = "safehold.io/delete-requested"
# On Backups made by a policy: the scheduled time (UTC) or the trigger value behind the run.
ANNOTATION_SCHEDULED_TIME = "safehold.io/scheduled-time"
ANNOTATION_TRIGGERED_BY = "safehold.io/triggered-by"
