"""API clients shared by handlers and runs, built once at start-up (Kopf memo)."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

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
