"""Clients shared by all handlers, built once at start-up and carried in Kopf's memo."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client


@dataclass
class Clients:
    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_api_client(cls, api: client.ApiClient) -> Clients:
        return cls(api=api, core=client.CoreV1Api(api), custom=client.CustomObjectsApi(api))
