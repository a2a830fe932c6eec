"""Deterministic names of the objects Safehold creates, always valid for the API server."""

from __future__ import annotations

import hashlib


def object_name(*parts: str, limit: int = 63) -> str:
    """A deterministic DNS-label name from parts, hashed when too long."""
    raw = "-".join(p.lower().replace(".", "-").replace("/", "-") for p in parts if p)
    if len(raw) <= limit:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{raw[: limit - 11].rstrip('-')}-{digest}"


LABEL_VALUE_LIMIT = 63


def label_value(name: str) -> str:
    """An object's name as a label value (at most 63 characters): the name itself when it
    fits, else its start and a hash of the whole, so that every child of a long-named run
    still carries a valid, distinct label."""
    if len(name) <= LABEL_VALUE_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: LABEL_VALUE_LIMIT - 11].rstrip('-.')}-{digest}"
