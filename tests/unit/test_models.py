"""Models parse the examples users write and reject what they must reject."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from safehold.api.backup import BackupSpec
from safehold.api.location import BackupStorageLocationSpec
from safehold.api.policy import BackupPolicySpec
from safehold.api.restore import RestoreRequestSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEC_MODELS = {
    "BackupStorageLocation": BackupStorageLocationSpec,
    "BackupPolicy": BackupPolicySpec,
    "Backup": BackupSpec,
    "RestoreRequest": RestoreRequestSpec,
}


def _example_objects() -> list[dict[str, object]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.mark.parametrize(
    "obj", [o for o in _example_objects() if o["kind"] in SPEC_MODELS], ids=lambda o: o["kind"]
)
def test_examples_parse(obj: dict[str, object]) -> None:
    model = SPEC_MODELS[str(obj["kind"])]
    parsed = model.model_validate(obj["spec"])
    # camelCase round trip: what we write back is what the user wrote, plus defaults.
    wire = parsed.to_wire()
    assert isinstance(obj["spec"], dict)
    for key in obj["spec"]:
        assert key in wire


def test_location_defaults() -> None:
    spec = BackupStorageLocationSpec.model_validate(
        {
            "bucket": "b-1",
            "credentialsSecret": {"name": "c"},
            "repositoryPasswordSecret": {"name": "p"},
        }
    )
    assert spec.access_mode == "ReadWrite"
    assert spec.credentials_secret.access_key_id_key == "accessKeyId"
    assert spec.repository_password_secret.key == "password"
    assert spec.sync_period == "5m"


@pytest.mark.parametrize(
    "bad",
    [
        {"bucket": "b-1", "credentialsSecret": {"name": "c"}},  # password secret missing
        {
            "bucket": "b-1",
            "credentialsSecret": {"name": "c"},
            "repositoryPasswordSecret": {"name": "p"},
            "accessMode": "WriteOnly",
        },
        {
            "bucket": "b-1",
            "credentialsSecret": {"name": "c"},
            "repositoryPasswordSecret": {"name": "p"},
            "syncPeriod": "often",
        },
        {
            "bucket": "b-1",
            "credentialsSecret": {"name": "c"},
            "repositoryPasswordSecret": {"name": "p"},
            "prefix": "/leading",
        },
    ],
)
def test_location_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BackupStorageLocationSpec.model_validate(bad)
