"""The per-object results of a restore as a ConfigMap, for locations Safehold may not write
to (ReadOnly): gzip-compressed JSON in binaryData, owned by the RestoreRequest."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence

from safehold import GROUP, VERSION
from safehold.api.base import JSON
from safehold.api.labels import LABEL_BACKUP, LABEL_COMPONENT, LABEL_INTERNAL
from safehold.planning.names import label_value, object_name

RESULTS_KEY = "results.json.gz"
# A ConfigMap holds at most 1 MiB; base64 grows the data by a third.
MAX_COMPRESSED_BYTES = 700 * 1024


def results_config_map_name(restore: str) -> str:
    return object_name("safehold-results", restore, limit=253)


def _compressed(document: JSON) -> bytes:
    return gzip.compress(json.dumps(document, separators=(",", ":")).encode(), mtime=0)


def results_config_map(
    restore: str, namespace: str, uid: str, dry_run: bool, items: Sequence[JSON]
) -> tuple[JSON, int]:
    """The ConfigMap, and how many items did not fit (the first ones are kept)."""
    kept = list(items)
    data = _compressed({"restore": restore, "dryRun": dry_run, "items": kept})
    while len(data) > MAX_COMPRESSED_BYTES and kept:
        kept = kept[: len(kept) * 3 // 4]
        data = _compressed(
            {"restore": restore, "dryRun": dry_run, "items": kept, "truncated": True}
        )
    body: JSON = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": results_config_map_name(restore),
            "namespace": namespace,
            "labels": {
                LABEL_COMPONENT: "restore-results",
                LABEL_BACKUP: label_value(restore),
                LABEL_INTERNAL: "true",
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "RestoreRequest",
                    "name": restore,
                    "uid": uid,
                }
            ],
        },
        "binaryData": {RESULTS_KEY: base64.b64encode(data).decode()},
    }
    return body, len(items) - len(kept)


def read_results(config_map: JSON) -> JSON:
    """The results document held by a ConfigMap made by results_config_map()."""
    raw = base64.b64decode((config_map.get("binaryData") or {})[RESULTS_KEY])
    doc: JSON = json.loads(gzip.decompress(raw))
    return doc
