"""The generated CRDs: in sync with the models, structural, and complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api import crdgen
from safehold.api.kinds import ALL_KINDS, KindInfo

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crd_files_match_the_models() -> None:
    assert crdgen.drift(CRDS) == [], "run `safehold crds generate` and commit crds/"
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crdgen.rendered_files())


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("info", ALL_KINDS, ids=lambda i: i.kind)
def test_schema_is_structural_and_documented(info: KindInfo) -> None:
    schema = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title"):
            assert banned not in node, f"{path} uses {banned}"
        if path.startswith((".spec.", ".status.")) and path.count(".") >= 2:
            assert node.get("description") or path.endswith(("[]", "{}")), f"{path} undocumented"


@pytest.mark.parametrize("info", ALL_KINDS, ids=lambda i: i.kind)
def test_names_columns_and_status_subresource(info: KindInfo) -> None:
    crd = crdgen.crd_for(info)
    names = crd["spec"]["names"]
    assert names["categories"] == ["safehold"]
    assert names["shortNames"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    column_names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in column_names
    assert any(
        c.get("priority") == 1 and c["name"] == "Message"
        for c in version["additionalPrinterColumns"]
    )
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("kind", ["Backup", "RestoreRequest"])
def test_one_shot_kinds_have_immutable_specs(kind: str) -> None:
    info = next(i for i in ALL_KINDS if i.kind == kind)
    spec = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "self == oldSelf" in rules


def test_generated_yaml_has_no_anchors() -> None:
    for content in crdgen.rendered_files().values():
        assert "&id" not in content
        assert yaml.safe_load(content)["kind"] == "CustomResourceDefinition"
