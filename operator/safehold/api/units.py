"""Sizes as people read them: the one formatting of byte counts, for the CLI and status."""

from __future__ import annotations


def human_bytes(size: int | None) -> str:
    """1536 -> "1.5KiB", 2370508919 -> "2.2GiB"; None -> "" (IEC units, no space, so a
    table column stays one word)."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.1f}PiB" if value < 10 else f"{value:.0f}PiB"
