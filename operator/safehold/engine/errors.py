"""The error a run ends with when it cannot go on."""

from __future__ import annotations

from safehold.api.errors import Failure


class RunError(Failure):
    """A run cannot go on; `reason` becomes the condition reason."""
