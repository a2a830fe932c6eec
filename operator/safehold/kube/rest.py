"""Raw JSON access to the Kubernetes API: any resource by path, lists page by page.

Large exports and restores go through here rather than the generated model classes, whose
deserialisation dominates the time of big lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, cast

from kubernetes import client

JSON = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        self.reason = ""
        self.details: JSON = {}
        text = body.decode(errors="replace")
        try:
            doc = json.loads(text)
            self.reason = str(doc.get("reason", ""))
            self.details = doc.get("details") or {}
            text = str(doc.get("message", text))
        except ValueError:
            pass
        self.message = text
        super().__init__(f"{method} {path}: {status} {self.reason}: {text}")


def resource_path(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """The REST path of a collection or object."""
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


class Rest:
    """Small JSON client over the official ApiClient (auth, TLS, proxies come from it)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool | None] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> JSON:
        headers = {"Accept": "application/json"}
        payload: Any = None
        if body is not None:
            headers["Content-Type"] = content_type
            # The client JSON-encodes bodies of JSON content types itself; others go as bytes.
            json_type = content_type.endswith("json")
            payload = body if json_type or isinstance(body, bytes) else json.dumps(body).encode()
        params = [
            (k, ("true" if v else "false") if isinstance(v, bool) else str(v))
            for k, v in (query or {}).items()
            if v is not None
        ]
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=payload,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*serialized, _request_timeout=timeout)
        data = resp.read()  # type: ignore[no-untyped-call]
        if not 200 <= resp.status <= 299:
            raise ApiError(method, path, resp.status, data or b"")
        return cast(JSON, json.loads(data)) if data else {}

    def get_text(self, path: str, **query: str | int | bool | None) -> str:
        """A plain-text endpoint such as pods/log."""
        params = [(k, str(v)) for k, v in query.items() if v is not None]
        serialized = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=params,
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*serialized, _request_timeout=30)
        data = resp.read()  # type: ignore[no-untyped-call]
        if not 200 <= resp.status <= 299:
            raise ApiError("GET", path, resp.status, data or b"")
        return str(data.decode(errors="replace"))

    def get(self, path: str, **query: str | int | bool | None) -> JSON:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def list_pages(
        self, path: str, *, limit: int = 500, label_selector: str | None = None
    ) -> Iterator[list[JSON]]:
        """Yield the items of a collection one page at a time."""
        cont: str | None = None
        while True:
            page = self.request(
                "GET",
                path,
                query={"limit": limit, "continue": cont, "labelSelector": label_selector},
                timeout=120,
            )
            yield page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return

    def apply(
        self,
        path: str,
        obj: JSON,
        *,
        field_manager: str,
        force: bool = False,
        dry_run: bool = False,
    ) -> JSON:
        """Server-side apply of `obj` at its object path."""
        return self.request(
            "PATCH",
            path,
            query={
                "fieldManager": field_manager,
                "force": force,
                "dryRun": "All" if dry_run else None,
            },
            body=json.dumps(obj).encode(),
            content_type=APPLY_PATCH,
        )

    def merge_patch(self, path: str, patch: JSON) -> JSON:
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    def create(self, path: str, obj: JSON) -> JSON:
        return self.request("POST", path, body=obj)

    def delete(self, path: str) -> JSON:
        return self.request("DELETE", path)
