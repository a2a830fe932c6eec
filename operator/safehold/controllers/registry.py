"""Importing this module registers every Kopf handler: one module per kind, plus start-up."""

from __future__ import annotations

from safehold.controllers import backup, location, policy, restore, startup, verification

# Imported for registration.
HANDLER_MODULES = (backup, location, policy, restore, startup, verification)
