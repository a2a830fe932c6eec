"""Kubernetes API clients, built once per process and shared by handlers and runs (Kopf memo)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes import client, config

from safehold.kube.rest import Rest


@dataclass
class Clients:
    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    rest: Rest

    @classmethod
    def from_api_client(cls, api: client.ApiClient) -> Clients:
        return cls(
            api=api,
            core=client.CoreV1Api(api),
            custom=client.CustomObjectsApi(api),
            rest=Rest(api),
        )


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, otherwise the kubeconfig (KUBECONFIG)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return client.ApiClient(configuration)
