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
