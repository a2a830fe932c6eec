"""Generate CustomResourceDefinitions from the pydantic models.

The output is a structural OpenAPI v3 schema: every node typed, no $ref, no anyOf, nullable
optionals expressed as "not required". Field docstrings become descriptions, so
``kubectl explain`` shows the same text as the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from safehold import GROUP, VERSION
from safehold.api.base import ApiModel
from safehold.api.kinds import ALL_KINDS, CelRule, KindInfo

HEADER = "# Generated from operator/safehold/api by `safehold crds generate`. Do not edit.\n"

# Schema keywords the Kubernetes structural schema accepts and we pass through.
_KEPT = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
}

JsonSchema = dict[str, Any]


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """Inline $ref/allOf and collapse Optional[X] (anyOf X|null) to X."""
    extra = {
        k: v
        for k, v in node.items()
        if k in ("description", "default") or k.startswith("x-kubernetes-")
    }
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**_resolve(target, defs), **extra}
    if "allOf" in node and len(node["allOf"]) == 1:
        return {**_resolve(node["allOf"][0], defs), **extra}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {node}")
        return {**_resolve(options[0], defs), **extra}
    return node


def _convert(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    node = _resolve(node, defs)
    # type and description first: the generated YAML reads like hand-written CRDs.
    out: JsonSchema = {k: node[k] for k in ("type", "description") if k in node}
    out |= {k: v for k, v in node.items() if k in _KEPT and k not in out}
    if "const" in node:
        out["enum"] = [node["const"]]
    if out.get("default", 0) is None:
        del out["default"]
    if "description" in out:
        out["description"] = _clean_text(out["description"])
    if "properties" in node:
        out = {"type": "object", **out}
        out["properties"] = {k: _convert(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    if "items" in node:
        out["items"] = _convert(node["items"], defs)
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node}")
    return out


def model_schema(model: type[ApiModel]) -> JsonSchema:
    """The structural OpenAPI schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _cel(rule: CelRule) -> dict[str, str]:
    out = {"rule": rule.rule, "message": rule.message}
    if rule.reason:
        out["reason"] = rule.reason
    if rule.field_path:
        out["fieldPath"] = rule.field_path
    return out


def _conditions_as_map(status: JsonSchema) -> None:
    conditions = status["properties"].get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]


def _root(info: KindInfo, spec: JsonSchema, status: JsonSchema) -> JsonSchema:
    root: JsonSchema = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if info.name_limit is not None:
        root["x-kubernetes-validations"] = [
            {
                "rule": f"size(self.metadata.name) <= {info.name_limit}",
                "message": f"a {info.kind} name has at most {info.name_limit} characters "
                "(it becomes a label value of the objects it makes)",
                "reason": "FieldValueInvalid",
            }
        ]
    return root


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec = model_schema(info.spec)
    if info.spec_rules:
        spec["x-kubernetes-validations"] = [_cel(rule) for rule in info.spec_rules]
    status = model_schema(info.status)
    _conditions_as_map(status)
    columns = [
        {"name": c.name, "type": c.type, "jsonPath": c.json_path}
        | ({"priority": c.priority} if c.priority else {})
        | ({"description": c.description} if c.description else {})
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "safehold"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": ["safehold"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _root(info, spec, status)},
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Shared sub-schemas are written out in full: anchors confuse readers and some tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(info: KindInfo) -> str:
    """The YAML file content for one kind."""
    body = yaml.dump(crd_for(info), Dumper=_NoAliasDumper, sort_keys=False, width=100)
    return HEADER + body


def file_name(info: KindInfo) -> str:
    return f"{GROUP}_{info.plural}.yaml"


def rendered_files() -> dict[str, str]:
    """File name to content for every kind."""
    return {file_name(info): render(info) for info in ALL_KINDS}


def write(out_dir: Path) -> list[Path]:
    """Write every CRD into out_dir; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered_files().items():
        path = out_dir / name
        path.write_text(content)
        written.append(path)
    return written


def drift(out_dir: Path) -> list[str]:
    """Names of files in out_dir that differ from what the models generate."""
    return [
        name
        for name, content in rendered_files().items()
        if not (out_dir / name).exists() or (out_dir / name).read_text() != content
    ]
