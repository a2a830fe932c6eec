"""A small JSON-in, JSON-out layer over the official `kubernetes` client's `ApiClient`.

The harness talks to the API server with plain dicts (paths, bodies and patch types exactly as the
REST API defines them), which keeps it independent of the generated model classes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubeError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        self.method = method
        self.path = path
        try:
            detail = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            detail = body[:300].decode("utf-8", errors="replace")
        self.message = str(detail)
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")


def load_configuration(kubeconfig: Path | str, pool_size: int = 32) -> Any:
    """A `kubernetes.client.Configuration` for `kubeconfig`."""
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=cfg
    )
    cfg.connection_pool_maxsize = pool_size
    return cfg


def api_client(kubeconfig: Path | str, pool_size: int = 32) -> Any:
    """A configured `kubernetes.client.ApiClient`."""
    return client.ApiClient(load_configuration(kubeconfig, pool_size))


class WatchStream:
    """One watch request; `close()` may be called from another thread to end it."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[JSON]:
        try:
            for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                if self._closed.is_set():
                    return
                if line:
                    event: JSON = json.loads(line)
                    yield event
        except Exception:
            if self._closed.is_set():
                return
            raise
        finally:
            self._response.release_conn()

    def close(self) -> None:
        self._closed.set()
        try:
            self._response.shutdown()
        except Exception:  # already closed, or an urllib3 without shutdown()
            self._response.close()


class Kube:
    def __init__(self, kubeconfig: Path | str, pool_size: int = 32) -> None:
        self.api = api_client(kubeconfig, pool_size)

    def close(self) -> None:
        self.api.close()

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int | bool] | None,
        body: Any,
        content_type: str | None,
        timeout: Any,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [
            (k, ("true" if v else "false") if isinstance(v, bool) else str(v))
            for k, v in (query or {}).items()
        ]
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*serialized, _request_timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> JSON:
        resp = self._call(method, path, query, body, content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise KubeError(method, path, resp.status, data or b"")
        if not data:
            return {}
        result: JSON = json.loads(data)
        return result

    def get(self, path: str, **query: str | int | bool) -> JSON:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JSON | None:
        """The object at `path`, or None when the API server says 404."""
        try:
            return self.get(path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def post(self, path: str, body: Any) -> JSON:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any, content_type: str = STRATEGIC_MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Any = None, **query: str | int | bool) -> JSON:
        return self.request("DELETE", path, body=body, query=query)

    def watch(self, path: str, **query: str | int | bool) -> WatchStream:
        q: dict[str, str | int | bool] = {"watch": True, **query}
        resp = self._call("GET", path, q, None, None, (10.0, None))
        if not 200 <= resp.status <= 299:
            raise KubeError("GET", path, resp.status, resp.read() or b"")
        return WatchStream(resp.response)
