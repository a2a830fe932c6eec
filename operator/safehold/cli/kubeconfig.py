"""Which cluster and namespace a command talks to: --kubeconfig, --context, -n."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safehold.cli.common import CliError, one_line

if TYPE_CHECKING:
    from kubernetes import client


@dataclass
class Connection:
    """An API client for the chosen context and the namespace commands default to."""

    api_client: client.ApiClient
    namespace: str

    def custom_objects(self) -> client.CustomObjectsApi:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def core(self) -> client.CoreV1Api:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)


def context_namespace(context: dict[str, Any] | None) -> str:
    """The namespace of a kubeconfig context entry, else `default`."""
    if not context:
        return "default"
    namespace = (context.get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def find_context(
    contexts: list[dict[str, Any]], active: dict[str, Any] | None, name: str | None
) -> dict[str, Any] | None:
    """The context entry named `name`, or the active one."""
    if name is None:
        return active
    for entry in contexts:
        if entry.get("name") == name:
            return entry
    raise CliError(f"context {name!r} not found in the kubeconfig")


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Connection:
    """Load the kubeconfig (the official client's rules: $KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig is not None and not os.path.isfile(kubeconfig):
        raise CliError(f"kubeconfig {kubeconfig} does not exist")
    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        entry = find_context(contexts or [], active, context)
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except ConfigException as err:
        raise CliError(f"invalid kubeconfig: {one_line(str(err))}") from None
    except OSError as err:
        raise CliError(f"cannot read the kubeconfig: {one_line(str(err))}") from None
    return Connection(client.ApiClient(configuration), namespace or context_namespace(entry))
