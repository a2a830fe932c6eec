"""S3 access through boto3: client construction and the location probe."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError

from safehold.storage.layout import BucketLayout
from safehold.storage.redact import redact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to talk to one bucket. Holds secrets: never log or print it."""

    bucket: str
    prefix: str
    region: str
    endpoint: str | None
    force_path_style: bool
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    ca_bundle: str | None = field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False

    @property
    def layout(self) -> BucketLayout:
        return BucketLayout(self.bucket, self.prefix)

    @property
    def secret_values(self) -> tuple[str, ...]:
        return (self.access_key_id, self.secret_access_key)

    def ca_file(self) -> Path | None:
        """The CA bundle as a private file (botocore and restic want a path).

        Named by its content, so probing every few minutes reuses one file per bundle instead
        of filling the temporary directory.
        """
        if not self.ca_bundle:
            return None
        digest = hashlib.sha256(self.ca_bundle.encode()).hexdigest()[:32]
        path = _private_dir() / f"{digest}.pem"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                handle.write(self.ca_bundle)
            os.replace(tmp, path)
        return path


_ca_dir: Path | None = None
_ca_dir_lock = threading.Lock()


def _private_dir() -> Path:
    """A directory only this process's user can read, made once per process."""
    global _ca_dir  # noqa: PLW0603
    with _ca_dir_lock:
        if _ca_dir is None:
            _ca_dir = Path(tempfile.mkdtemp(prefix="safehold-ca-"))
        return _ca_dir


# One botocore session for the process: every Session loads and keeps its own copy of the S3
# service model (about 12 MiB and 60 ms each), while clients made from one session share it.
# Clients are thread-safe; creating them from a shared session is not, hence the lock.
_session: boto3.session.Session | None = None
_session_lock = threading.Lock()


def _shared_session() -> boto3.session.Session:
    global _session  # noqa: PLW0603 - one per process, built on first use
    if _session is None:
        _session = boto3.session.Session()
    return _session


def make_client(settings: S3Settings, timeout: float = 10.0) -> S3Client:
    """A boto3 S3 client for the settings, with short timeouts and one retry."""
    config = Config(
        region_name=settings.region,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path" if settings.force_path_style else "auto"},
        signature_version="s3v4",
    )
    verify: bool | str = not settings.insecure_skip_tls_verify
    ca = settings.ca_file()
    if ca is not None and verify:
        verify = str(ca)
    with _session_lock:
        return _shared_session().client(
            "s3",
            endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=config,
            verify=verify,
        )


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    message: str


_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


def _speaks_s3(error: ClientError) -> bool:
    """Whether the answer came from an S3 API: an S3 error code, or S3's request id headers."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return not code.isdigit() or any(h in headers for h in ("x-amz-request-id", "x-amz-id-2"))


def _classify(error: ClientError, settings: S3Settings, action: str) -> ProbeResult:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    text = redact(str(error), settings.secret_values)
    if not _speaks_s3(error):
        return ProbeResult(
            False,
            "NotAnS3Endpoint",
            f"{settings.endpoint or 'the endpoint'} answered HTTP {status} without an S3 error: "
            "it is not an S3 API (check the endpoint's host and port)",
        )
    if code in ("NoSuchBucket", "404") or status == 404:
        return ProbeResult(False, "BucketNotFound", f"bucket {settings.bucket!r} does not exist")
    if code in _CREDENTIAL_ERRORS:
        return ProbeResult(
            False,
            "InvalidCredentials",
            f"the object store rejected the access key pair ({code}); check the credentials Secret",
        )
    if code == "AccessDenied" or status == 403:
        return ProbeResult(False, "AccessDenied", f"access denied while trying to {action}: {text}")
    return ProbeResult(False, "StorageError", f"could not {action}: {text}")


def probe_bucket(client: S3Client, settings: S3Settings, writable: bool) -> ProbeResult:
    """Check that the bucket exists, the credentials work and, if asked, the prefix is writable.

    Listing comes first because, unlike HEAD, its error body says *why* it failed.
    """
    where = f"{settings.endpoint or 'AWS S3'} bucket {settings.bucket!r}"
    try:
        client.list_objects_v2(
            Bucket=settings.bucket, Prefix=settings.layout.key("") or "", MaxKeys=1
        )
    except EndpointConnectionError as err:
        return ProbeResult(
            False, "EndpointUnreachable", redact(f"cannot connect to {where}: {err}", ())
        )
    except ClientError as err:
        return _classify(err, settings, "list the bucket")
    except ResponseParserError:
        return ProbeResult(
            False,
            "NotAnS3Endpoint",
            f"{where}: the answer is not S3's (check the endpoint's host and port)",
        )
    except BotoCoreError as err:
        return ProbeResult(
            False, "EndpointUnreachable", f"cannot talk to {where}: {type(err).__name__}: {err}"
        )
    if writable:
        key = settings.layout.probe_key(secrets.token_hex(8))
        try:
            client.put_object(Bucket=settings.bucket, Key=key, Body=b"safehold write probe\n")
            client.delete_object(Bucket=settings.bucket, Key=key)
        except ClientError as err:
            result = _classify(err, settings, f"write {key!r}")
            if result.reason == "AccessDenied":
                return ProbeResult(False, "NotWritable", result.message)
            return result
        except BotoCoreError as err:
            return ProbeResult(False, "EndpointUnreachable", f"write to {where} failed: {err}")
    return ProbeResult(
        True, "Available", f"{where} is reachable" + (" and writable" if writable else "")
    )


@dataclass(frozen=True)
class RepositoryObjects:
    """The objects of a restic repository that decide whether a password opens it: `config`
    and the key files, each with its ETag. Listing them costs two requests; opening the
    repository with restic costs a key derivation (about a second of CPU)."""

    present: bool
    etags: tuple[tuple[str, str], ...] = ()


def repository_objects(
    client: S3Client, settings: S3Settings, namespace: str
) -> RepositoryObjects | ProbeResult:
    """The `config` and `keys/` objects of a namespace's repository (restic's S3 layout), or
    the failed ProbeResult when the store does not answer."""
    prefix = settings.layout.repository_key(namespace)
    where = f"{settings.endpoint or 'AWS S3'} bucket {settings.bucket!r}"
    try:
        try:
            head = client.head_object(Bucket=settings.bucket, Key=f"{prefix}/config")
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return RepositoryObjects(present=False)
            raise
        etags = [("config", str(head.get("ETag", "")))]
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.bucket, Prefix=f"{prefix}/keys/"
        )
        for page in pages:
            etags += [(str(o["Key"]), str(o.get("ETag", ""))) for o in page.get("Contents", [])]
    except ClientError as err:
        return _classify(err, settings, f"read the repository at {prefix!r}")
    except BotoCoreError as err:
        return ProbeResult(
            False, "EndpointUnreachable", f"cannot talk to {where}: {type(err).__name__}: {err}"
        )
    return RepositoryObjects(present=True, etags=tuple(sorted(etags)))


def delete_prefix(client: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object whose key starts with `prefix` (end it with "/"); returns how many."""
    if not prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r} must end with /")
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            count += len(keys)
    return count
