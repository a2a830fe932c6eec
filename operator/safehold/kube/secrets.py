"""Reading single keys of Secrets, with failures named by a status reason."""

from __future__ import annotations

import base64

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from safehold.api.errors import Failure


class SecretProblem(Failure):
    """A Secret could not provide a value; `reason` is a CamelCase status reason."""


def read_secret_key(core: client.CoreV1Api, namespace: str, name: str, key: str) -> str:
    """The decoded value of `key` in Secret `namespace/name`."""
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as err:
        if err.status == 404:
            raise SecretProblem(
                "SecretNotFound", f"Secret {namespace}/{name} does not exist"
            ) from None
        if err.status == 403:
            raise SecretProblem(
                "SecretForbidden", f"the operator may not read Secret {namespace}/{name}"
            ) from None
        raise
    data = secret.data or {}
    if key not in data:
        raise SecretProblem("SecretKeyMissing", f"Secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data[key]).decode()
