"""The repository gateway: restic's REST protocol in front of the object store, so that mover
pods never hold S3 credentials.

Movers reach `rest:http://<gateway>/` with a grant (storage/grants.py) as HTTP Basic
credentials. The gateway verifies the grant, maps the request onto the one repository the
grant names (restic's S3 layout below the location's prefix) and enforces its mode:

- every file name must be the SHA-256 of its content, as restic names everything but
  `config`; an upload whose content does not match is refused, so no grant can plant a
  corrupt file under a name a later backup would trust;
- `append`: reads, new files (an existing file is never overwritten: the same name means the
  same content, so the upload is acknowledged without writing), and deleting only the locks
  this grant created; never `config` or `keys`;
- `read`: reads only.

Protocol: restic's REST backend, version 2 listings (and 1), ranges on reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from safehold.api.errors import Failure
from safehold.storage.grants import Grant, GrantInvalid, verify
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import make_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

TYPES = ("data", "keys", "locks", "snapshots", "index")
_NAME = re.compile(r"^[0-9a-f]{64}$")
V2 = "application/vnd.x.restic.rest.v2"
V1 = "application/vnd.x.restic.rest.v1"
MAX_UPLOAD = 256 * 1024 * 1024  # restic packs are at most 128 MiB
MAX_SMALL_UPLOAD = 16 * 1024 * 1024  # index, snapshot, lock files
CHUNK = 1024 * 1024
SPOOL = 8 * 1024 * 1024  # uploads above this go to a temporary file, not memory

LocationResolver = Callable[[str, str], ResolvedLocation]


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class GatewayRefused(Failure):
    """The request is not allowed, or the store failed it."""

    def __init__(self, status: HTTPStatus, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.status = status


@dataclass
class _Revocations:
    """Grants revoked before they expire (their run ended), until they expire."""

    until: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, grant: Grant) -> None:
        with self.lock:
            now = int(time.time())
            self.until = {k: v for k, v in self.until.items() if v >= now}
            self.until[grant.nonce] = grant.expires

    def __contains__(self, grant: Grant) -> bool:
        with self.lock:
            return grant.nonce in self.until


class RepositoryGateway:
    """The gateway's logic, independent of the HTTP server (unit-testable with a store)."""

    def __init__(self, key: bytes, resolve: LocationResolver) -> None:
        self.key = key
        self.resolve = resolve
        self.revoked = _Revocations()
        self._locks: dict[str, set[str]] = {}
        self._locks_guard = threading.Lock()

    # ---- authentication ---------------------------------------------------------------
    def authenticate(self, username: str, password: str) -> Grant:
        grant = verify(self.key, username, password)
        if grant in self.revoked:
            raise GrantInvalid("GrantRevoked", "credential revoked: its run has ended")
        return grant

    def revoke(self, grant: Grant) -> None:
        self.revoked.add(grant)
        with self._locks_guard:
            self._locks.pop(grant.nonce, None)

    # ---- the repository a grant opens ---------------------------------------------------
    def _store(self, grant: Grant) -> tuple[S3Client, str, str]:
        """(client, bucket, key prefix of the repository)."""
        try:
            location = self.resolve(grant.location_namespace, grant.location)
        except Failure as err:
            raise GatewayRefused(HTTPStatus.SERVICE_UNAVAILABLE, err.reason, err.message) from None
        if grant.mode == "append" and not location.writable:
            raise GatewayRefused(
                HTTPStatus.FORBIDDEN, "LocationReadOnly", f"{location.name} is ReadOnly"
            )
        layout = location.s3.layout
        return make_client(location.s3), layout.bucket, layout.key(grant.repository)

    @staticmethod
    def object_key(prefix: str, kind: str, name: str) -> str:
        if kind == "config":
            return f"{prefix}/config"
        if kind == "data":
            return f"{prefix}/data/{name[:2]}/{name}"
        return f"{prefix}/{kind}/{name}"

    @staticmethod
    def parse(path: str) -> tuple[str, str | None]:
        """(type, name) of a request path; name None for a listing."""
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if parts == ["config"]:
            return "config", "config"
        if len(parts) == 1 and parts[0] in TYPES:
            return parts[0], None
        if len(parts) == 2 and parts[0] in TYPES and _NAME.match(parts[1]):
            return parts[0], parts[1]
        raise GatewayRefused(HTTPStatus.NOT_FOUND, "NotFound", f"no such path {path!r}")

    # ---- requests ---------------------------------------------------------------------
    def stat(self, grant: Grant, kind: str, name: str) -> int:
        client, bucket, prefix = self._store(grant)
        try:
            head = client.head_object(Bucket=bucket, Key=self.object_key(prefix, kind, name))
        except ClientError as err:
            raise _store_error(err) from None
        return int(head["ContentLength"])

    def open(
        self, grant: Grant, kind: str, name: str, byte_range: str | None
    ) -> tuple[int, int, Any, str | None]:
        """(status, length, body stream, Content-Range) of a read."""
        client, bucket, prefix = self._store(grant)
        args: dict[str, Any] = {"Bucket": bucket, "Key": self.object_key(prefix, kind, name)}
        if byte_range:
            args["Range"] = byte_range
        try:
            obj = client.get_object(**args)
        except ClientError as err:
            raise _store_error(err) from None
        status = 206 if obj.get("ContentRange") else 200
        return status, int(obj["ContentLength"]), obj["Body"], obj.get("ContentRange")

    def listing(self, grant: Grant, kind: str) -> list[tuple[str, int]]:
        client, bucket, prefix = self._store(grant)
        found: list[tuple[str, int]] = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/{kind}/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"]).rsplit("/", 1)[-1]
                    if _NAME.match(name):
                        found.append((name, int(item["Size"])))
        except ClientError as err:
            raise _store_error(err) from None
        return found

    def save(self, grant: Grant, kind: str, name: str, body: Readable, length: int) -> None:
        """Store one uploaded file after checking the grant allows it and its hash."""
        if grant.mode != "append" or kind in ("config", "keys"):
            raise GatewayRefused(
                HTTPStatus.FORBIDDEN, "Forbidden", f"this grant may not write {kind} files"
            )
        limit = MAX_UPLOAD if kind == "data" else MAX_SMALL_UPLOAD
        if length > limit:
            raise GatewayRefused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "TooLarge", "upload too large"
            )
        client, bucket, prefix = self._store(grant)
        key = self.object_key(prefix, kind, name)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:
            digest = hashlib.sha256()
            left = length
            while left > 0:
                chunk = body.read(min(CHUNK, left))
                if not chunk:
                    raise GatewayRefused(HTTPStatus.BAD_REQUEST, "ShortUpload", "upload cut short")
                digest.update(chunk)
                spool.write(chunk)
                left -= len(chunk)
            if digest.hexdigest() != name:
                raise GatewayRefused(
                    HTTPStatus.BAD_REQUEST,
                    "HashMismatch",
                    f"content of {kind}/{name} has another hash",
                )
            if self._exists(client, bucket, key):
                return  # same name, same content: nothing to overwrite
            spool.seek(0)
            try:
                client.upload_fileobj(spool, bucket, key)
            except (ClientError, BotoCoreError) as err:
                raise GatewayRefused(
                    HTTPStatus.BAD_GATEWAY, "StoreFailed", f"storing {kind}/{name} failed: {err}"
                ) from None
        if kind == "locks":
            with self._locks_guard:
                self._locks.setdefault(grant.nonce, set()).add(name)

    def remove(self, grant: Grant, kind: str, name: str) -> None:
        with self._locks_guard:
            own = kind == "locks" and name in self._locks.get(grant.nonce, set())
        if grant.mode != "append" or not own:
            raise GatewayRefused(
                HTTPStatus.FORBIDDEN, "Forbidden", f"this grant may not delete {kind}/{name}"
            )
        client, bucket, prefix = self._store(grant)
        try:
            client.delete_object(Bucket=bucket, Key=self.object_key(prefix, kind, name))
        except ClientError as err:
            raise _store_error(err) from None
        with self._locks_guard:
            self._locks.get(grant.nonce, set()).discard(name)

    @staticmethod
    def _exists(client: S3Client, bucket: str, key: str) -> bool:
        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if _store_error(err).status == HTTPStatus.NOT_FOUND:
                return False
            raise _store_error(err) from None
        return True


def _store_error(err: ClientError) -> GatewayRefused:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return GatewayRefused(HTTPStatus.NOT_FOUND, "NotFound", "no such file")
    if code in ("InvalidRange",) or status == 416:
        return GatewayRefused(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "InvalidRange", code)
    return GatewayRefused(HTTPStatus.BAD_GATEWAY, "StoreFailed", f"object store: {code}")


class _Body:
    """A request body: reads stop at its Content-Length; what is left can be drained."""

    def __init__(self, stream: Readable, length: int) -> None:
        self.stream = stream
        self.left = length

    def read(self, size: int) -> bytes:
        chunk = self.stream.read(min(size, self.left)) if self.left > 0 else b""
        self.left -= len(chunk)
        return chunk


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gateway: RepositoryGateway  # set on the subclass the server makes
    body: _Body | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gateway %s: " + format, self.address_string(), *args)

    def _grant(self) -> Grant:
        import base64

        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise GrantInvalid("GrantMissing", "no credential")
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise GrantInvalid("GrantInvalid", "malformed credential") from None
        return self.gateway.authenticate(user, password)

    def _reply(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="safehold"')
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self, action: Callable[[Grant, str, str | None], None]) -> None:
        self.body = None
        try:
            grant = self._grant()
            kind, name = RepositoryGateway.parse(self.path)
            action(grant, kind, name)
        except GrantInvalid as err:
            self._drain()
            self._reply(HTTPStatus.UNAUTHORIZED, err.message.encode())
        except GatewayRefused as err:
            self._drain()
            self._reply(err.status, err.message.encode())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("gateway request %s %s failed", self.command, self.path)
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error")

    def _drain(self) -> None:
        """Read what is left of the request body, so the connection can be reused (a large
        rest closes the connection instead)."""
        if self.body is None:
            self.body = _Body(self.rfile, int(self.headers.get("Content-Length") or 0))
        if self.body.left > MAX_SMALL_UPLOAD:
            self.close_connection = True
            return
        while self.body.read(CHUNK):
            pass

    def do_HEAD(self) -> None:
        def head(grant: Grant, kind: str, name: str | None) -> None:
            if name is None:
                raise GatewayRefused(HTTPStatus.NOT_FOUND, "NotFound", "no such file")
            size = self.gateway.stat(grant, kind, name)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()

        self._dispatch(head)

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def _get(self, grant: Grant, kind: str, name: str | None) -> None:
        if name is None:
            items = self.gateway.listing(grant, kind)
            if V2 in self.headers.get("Accept", ""):
                body = json.dumps([{"name": n, "size": s} for n, s in items]).encode()
                self._reply(200, body, V2)
            else:
                self._reply(200, json.dumps([n for n, _ in items]).encode(), V1)
            return
        status, length, stream, content_range = self.gateway.open(
            grant, kind, name, self.headers.get("Range")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        try:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                self.wfile.write(chunk)
        finally:
            stream.close()

    def do_POST(self) -> None:
        def post(grant: Grant, kind: str, name: str | None) -> None:
            if name is None:
                raise GatewayRefused(
                    HTTPStatus.FORBIDDEN, "Forbidden", "repositories are not created here"
                )
            length = self.headers.get("Content-Length")
            if length is None:
                raise GatewayRefused(
                    HTTPStatus.LENGTH_REQUIRED, "LengthRequired", "no Content-Length"
                )
            self.body = _Body(self.rfile, int(length))
            self.gateway.save(grant, kind, name, self.body, int(length))
            self._reply(200)

        self._dispatch(post)

    def do_DELETE(self) -> None:
        def delete(grant: Grant, kind: str, name: str | None) -> None:
            if name is None:
                raise GatewayRefused(HTTPStatus.FORBIDDEN, "Forbidden", "nothing to delete")
            self.gateway.remove(grant, kind, name)
            self._reply(200)

        self._dispatch(delete)


class GatewayServer:
    """The gateway's HTTP server, in threads of the operator process."""

    def __init__(self, gateway: RepositoryGateway, address: str, port: int) -> None:
        handler = type("GatewayHandler", (_Handler,), {"gateway": gateway})
        self.server = ThreadingHTTPServer((address, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="repository-gateway", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> GatewayServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
