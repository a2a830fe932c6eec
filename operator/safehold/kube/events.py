"""Kubernetes Events about Safehold objects: the one way the operator posts them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from safehold import API_VERSION

log = logging.getLogger(__name__)
COMPONENT = "safehold-operator"


def post_event(
    core: client.CoreV1Api,
    kind: str,
    namespace: str,
    name: str,
    uid: str | None,
    type_: Literal["Normal", "Warning"],
    reason: str,
    message: str,
) -> None:
    """Post an Event; failures are logged, never raised (events are best effort)."""
    now = datetime.now(UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version=API_VERSION, kind=kind, name=name, namespace=namespace, uid=uid
        ),
        type=type_,
        reason=reason,
        message=message[:1024],
        source=client.V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT,
        reporting_instance=COMPONENT,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
    try:
        core.create_namespaced_event(namespace, event)
    except ApiException as err:
        log.warning("could not post event %s for %s/%s: %s", reason, namespace, name, err.reason)
