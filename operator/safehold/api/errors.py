"""The one error family for everything that ends in a status condition.

Every failure that becomes a condition carries a CamelCase `reason` (the condition's reason)
and a human `message`. Layers subclass `Failure` to say where a failure comes from (a
selection, restic, a Secret, a mover), never to re-implement the pair.
"""

from __future__ import annotations


class Failure(Exception):
    """A failure with a condition reason; `str(failure)` is the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def summary(self) -> str:
        """`Reason: message`, the form per-item results carry."""
        return f"{self.reason}: {self.message}"


def invalid_spec(error: ValueError, where: str = "spec") -> Failure:
    """A spec the models refuse (what the CRD schema could not catch, or an object written
    under an older schema), as one InvalidSpec failure naming the fields."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return Failure("InvalidSpec", f"{where}: {error}")
    problems = []
    for item in error.errors()[:5]:
        field = ".".join(str(part) for part in (where, *item["loc"]))
        problems.append(f"{field}: {item['msg']}")
    more = f" (and {error.error_count() - 5} more)" if error.error_count() > 5 else ""
    return Failure("InvalidSpec", "; ".join(problems) + more)
