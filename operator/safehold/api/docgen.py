"""Generate docs/api.md, the field reference, from the same schemas as the CRDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safehold import API_VERSION
from safehold.api.crdgen import JsonSchema, crd_for
from safehold.api.kinds import ALL_KINDS

HEADER = f"""# API reference ({API_VERSION})

Generated from `operator/safehold/api` by `safehold docs generate`; a test fails when it
drifts. `kubectl explain <kind>.spec` shows the same text.
"""


def _type_of(node: JsonSchema) -> str:
    kind = str(node.get("type"))
    if kind == "array":
        return f"[]{_type_of(node['items'])}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def _constraints(node: JsonSchema) -> str:
    parts = []
    if "default" in node:
        parts.append(f"default `{json.dumps(node['default'])}`")
    for key, label in (("minimum", "≥"), ("maximum", "≤")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    for key, label in (("maxLength", "at most {} characters"), ("maxItems", "at most {} items")):
        if key in node:
            parts.append(label.format(node[key]))
    if "pattern" in node and "enum" not in node:
        parts.append("pattern")
    parts += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return ", ".join(parts)


def _rows(node: JsonSchema, prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        target = child["items"] if child.get("type") == "array" else child
        desc = str(child.get("description", "")).replace("|", "\\|")
        req = "yes" if name in required else ""
        rows.append(f"| `{path}` | {_type_of(child)} | {req} | {desc} | {_constraints(child)} |")
        if "properties" in target:
            suffix = "[]" if child.get("type") == "array" else ""
            rows += _rows(target, path + suffix, set(target.get("required", [])))
    return rows


def render() -> str:
    out = [HEADER]
    for info in ALL_KINDS:
        schema: dict[str, Any] = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        out.append(f"## {info.kind}\n\n{info.description}\n")
        out.append(f"Short names: {', '.join(f'`{s}`' for s in info.short_names)}.\n")
        for part in ("spec", "status"):
            node = schema["properties"][part]
            out.append(f"### {part}\n\n{node.get('description', '')}\n")
            if part == "spec":
                root = [r["message"] for r in schema.get("x-kubernetes-validations", [])]
                if root:
                    out.append("Name: " + "; ".join(root) + ".\n")
            rules = node.get("x-kubernetes-validations", [])
            if rules:
                out.append("Rules: " + "; ".join(r["message"] for r in rules) + ".\n")
            out.append("| field | type | required | description | constraints |")
            out.append("|---|---|---|---|---|")
            out += _rows(node, part, set(node.get("required", [])))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())


def drifted(path: Path) -> bool:
    return not path.exists() or path.read_text() != render()
