"""Raw JSON access to the Kubernetes API: any resource by path, lists page by page.

Large exports and restores go through here rather than the generated model classes, whose
deserialisation dominates the time of big lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

from kubernetes import client

from safehold.api.base import JSON
from safehold.api.errors import Failure

log = logging.getLogger(__name__)
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Failure):
    """The API server answered with an error status; `reason` is the Status reason (e.g.
    Forbidden, NotFound; empty when the server gave none), the message its text."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        self.details: JSON = {}
        text = body.decode(errors="replace")
        reason = ""
        try:
            doc = json.loads(text)
            reason = str(doc.get("reason", ""))
            self.details = doc.get("details") or {}
            text = str(doc.get("message", text))
        except ValueError:
            pass
        super().__init__(reason, text)
        self.request = f"{method} {path}"

    def __str__(self) -> str:
        return f"{self.request}: {self.status} {self.reason}: {self.message}"


class Rest:
    """Small JSON client over the official ApiClient (auth, TLS, proxies come from it)."""

    def __init__(self, api: client.ApiClient, impersonate: str | None = None) -> None:
        self.api = api
        self.impersonate = impersonate

    def as_service_account(self, namespace: str, name: str) -> Rest:
        """A client acting as that ServiceAccount (Impersonate-User): the API server's RBAC
        and escalation checks then decide, as for the account itself. The API server adds
        the account's groups (system:serviceaccounts, system:serviceaccounts:<namespace>)."""
        return Rest(self.api, f"system:serviceaccount:{namespace}:{name}")

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
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
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

    def delete_quietly(self, path: str, propagation: str = "Background") -> None:
        """Delete with this propagation policy; an object already gone is fine and other
        failures are only logged (clean-up of temporary objects must not fail a run)."""
        try:
            self.request("DELETE", path, query={"propagationPolicy": propagation})
        except ApiError as err:
            if err.status != 404:
                log.warning("could not delete %s: %s", path, err)
