"""Shared building blocks of every custom resource model.

Models are the single source of truth: the CRD schemas in ``crds/`` are generated from them
and the operator parses every body it receives through them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

# A JSON object as the API server sends and takes it.
JSON = dict[str, Any]


class ApiModel(BaseModel):
    """Base of all API models: camelCase on the wire, docstrings become descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON-compatible form the API server stores (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]

# A Kubernetes resource quantity (100m, 512Mi, 1.5G), as the API server parses them.
Quantity = Annotated[
    str,
    Field(
        max_length=32,
        pattern=r"^[+]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,3}))?$",
    ),
]
_NAMES: JsonDict = {
    "rule": "self.all(k, k.matches('^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+)$'))",
    "message": "resource names are cpu, memory, ephemeral-storage or hugepages-<size>",
    "reason": "FieldValueInvalid",
}
_RESOURCE_NAME = re.compile(r"^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+)$")

DnsLabel = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
DnsSubdomain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]


class Condition(ApiModel):
    """A status condition following the Kubernetes API conventions (metav1.Condition)."""

    type: str
    """Condition type, e.g. Ready, Succeeded or Complete."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str
    """Machine-readable CamelCase reason for the last transition."""
    message: str = ""
    """Human-readable explanation."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = None
    """The .metadata.generation the condition was computed from."""


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: DnsSubdomain
    """Name of the referenced object."""


class SecretKeyReference(ApiModel):
    """A key of a Secret in the same namespace."""

    name: DnsSubdomain
    """Name of the Secret."""
    key: str = Field(min_length=1)
    """Key inside the Secret's data."""


class LabelSelectorRequirement(ApiModel):
    """One set-based requirement of a label selector."""

    key: str = Field(min_length=1)
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] | None = None
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector. An empty selector matches everything."""

    match_labels: dict[str, str] | None = None
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] | None = None
    """Set-based requirements that must all hold."""


class ResourceRequirements(ApiModel):
    """CPU and memory requests and limits for pods Safehold starts."""

    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=8, json_schema_extra={"x-kubernetes-validations": [_NAMES]}
    )
    """Minimum resources, e.g. {cpu: 100m, memory: 128Mi}."""
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=8, json_schema_extra={"x-kubernetes-validations": [_NAMES]}
    )
    """Maximum resources."""

    @field_validator("requests", "limits")
    @classmethod
    def _names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not _RESOURCE_NAME.match(name):
                raise ValueError(f"{name!r} is not cpu, memory, ephemeral-storage or hugepages-*")
        return value
