"""Catalog manifests: format 2 records the content a run took; format 1 stays readable."""

from __future__ import annotations

import json
from pathlib import Path

from safehold.api.content import BackupContent, DatabaseTarget, Selection
from safehold.engine.catalog_sync import backup_from_manifest
from safehold.storage.catalog import FORMAT_VERSION, BackupManifest

DATA = Path(__file__).resolve().parents[1] / "data"


def test_a_stored_format_1_manifest_is_read() -> None:
    raw = json.loads((DATA / "manifest-v1.json").read_text())
    manifest = BackupManifest.model_validate(raw)
    assert manifest.format_version == 1
    assert manifest.content is None
    assert manifest.restorable
    assert manifest.resources is not None
    assert manifest.resources.total == 7
    assert [f.path for f in manifest.databases[0].files] == [
        "postgresql/globals.sql",
        "postgresql/shop.dump",
    ]
    assert manifest.volumes[0].run_as_user == 1000
    body, status = backup_from_manifest(manifest, "recovery")
    assert body["spec"] == {
        "storageLocation": "recovery",
        "selection": {"namespaces": ["shop"], "includeClusterResources": False},
    }
    assert body["metadata"]["labels"] == {"safehold.io/policy": "nightly"}
    assert status["phase"] == "Succeeded"


def test_format_2_records_database_targets_without_secret_values() -> None:
    content = BackupContent(
        storage_location="main",
        selection=Selection(namespaces=["shop"]),
        databases=[
            DatabaseTarget.model_validate(
                {
                    "name": "main",
                    "type": "postgresql",
                    "service": {"name": "pg", "namespace": "shop"},
                    "port": 5432,
                    "databases": ["shop"],
                    "credentialsSecret": {"name": "pg-creds"},
                    "tls": {"mode": "require"},
                }
            )
        ],
    )
    manifest = BackupManifest(
        namespace="ops", name="b1", storage_location="main", phase="Succeeded", content=content
    )
    wire = manifest.to_wire()
    assert wire["formatVersion"] == FORMAT_VERSION == 2
    target = wire["content"]["databases"][0]
    assert target["service"] == {"name": "pg", "namespace": "shop"}
    assert target["credentialsSecret"] == {
        "name": "pg-creds",
        "usernameKey": "username",
        "passwordKey": "password",
    }
    assert target["tls"]["mode"] == "require"
    again = BackupManifest.model_validate(json.loads(json.dumps(wire)))
    assert again.content == content
    body, _ = backup_from_manifest(again, "recovery")
    assert body["spec"]["storageLocation"] == "recovery"
    assert body["spec"]["databases"][0]["service"]["name"] == "pg"
