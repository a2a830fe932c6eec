"""The repository gateway against real restic and a real SeaweedFS: what each grant lets a
mover do, and what it refuses (forged, expired, revoked grants; deletes; overwrites; a file
whose content is not its name; writes to a ReadOnly location; another repository)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from localcluster import binaries
from localcluster.databases import S3Store
from safehold.api.location import BackupStorageLocationSpec
from safehold.storage import restic
from safehold.storage.gateway import GatewayServer, RepositoryGateway
from safehold.storage.grants import Grant, sign
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import S3Settings

KEY = b"k" * 32
PASSWORD = "location-password"


@pytest.fixture(scope="module")
def store() -> Iterator[S3Store]:
    s3 = S3Store(bucket="gateway").start()
    yield s3
    s3.stop()


def _location(store: S3Store, access_mode: str = "ReadWrite") -> ResolvedLocation:
    spec = BackupStorageLocationSpec.model_validate(
        {
            "endpoint": store.seaweed.endpoint_url,
            "bucket": store.bucket,
            "prefix": "team",
            "forcePathStyle": True,
            "credentialsSecret": {"name": "s3"},
            "repositoryPasswordSecret": {"name": "pw"},
            "accessMode": access_mode,
        }
    )
    s3 = S3Settings(
        bucket=store.bucket,
        prefix="team",
        region=store.region,
        endpoint=store.seaweed.endpoint_url,
        force_path_style=True,
        access_key_id=store.seaweed.access_key,
        secret_access_key=store.seaweed.secret_key,
    )
    return ResolvedLocation("ops", access_mode.lower(), spec, s3, PASSWORD)


@pytest.fixture(scope="module")
def gateway(store: S3Store) -> Iterator[tuple[RepositoryGateway, str]]:
    locations = {"readwrite": _location(store), "readonly": _location(store, "ReadOnly")}
    logic = RepositoryGateway(KEY, lambda ns, name: locations[name])
    server = GatewayServer(logic, "127.0.0.1", 0).start()
    # The repository exists (the operator creates it, movers may not).
    restic.init(locations["readwrite"].repository_at("repositories/shop"))
    yield logic, f"http://127.0.0.1:{server.port}/"
    server.stop()


def _grant(mode: str, location: str = "readwrite", valid: float = 600) -> Grant:
    from datetime import UTC, datetime

    expires = datetime.now(UTC) + timedelta(seconds=valid)
    return Grant.issue("ops", location, "repositories/shop", mode, expires)  # type: ignore[arg-type]


def _restic(
    url: str, grant: Grant, *args: str, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    user, secret = sign(KEY, grant)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "RESTIC_REPOSITORY": f"rest:{url}",
        "RESTIC_PASSWORD": password,
        "RESTIC_REST_USERNAME": user,
        "RESTIC_REST_PASSWORD": secret,
    }
    cmd = [str(binaries.find("restic")), "--no-cache", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _raw(url: str, method: str, path: str, grant: Grant | None, body: bytes = b"") -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback http only
        url.rstrip("/") + path, data=body or None, method=method
    )
    if grant is not None:
        user, secret = sign(KEY, grant)
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_append_grant_backs_up_and_may_not_delete(
    gateway: tuple[RepositoryGateway, str], tmp_path: Path
) -> None:
    _, url = gateway
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (data / "b.txt").write_text("hello\n")
    append = _grant("append")
    backup = _restic(url, append, "backup", str(data), "--json", "--quiet")
    assert backup.returncode == 0, backup.stderr
    snapshot = restic._summary_line(backup.stdout.encode())["snapshot_id"]
    # The same data again: restic uploads nothing new, every file already exists.
    again = _restic(url, append, "backup", str(data), "--json", "--quiet")
    assert again.returncode == 0, again.stderr
    # An append grant can neither forget snapshots nor add a key (another password).
    forget = _restic(url, append, "forget", snapshot)
    assert forget.returncode != 0
    listed = json.loads(_restic(url, append, "snapshots", "--json").stdout)
    assert snapshot in [s["id"] for s in listed]
    assert len(listed) == 2
    added = _restic(url, append, "key", "add", "--new-password-file", "/dev/null")
    assert added.returncode != 0
    # A read grant restores, without a lock, and may write nothing at all.
    read = _grant("read")
    target = tmp_path / "restored"
    restored = _restic(
        url, read, "--no-lock", "restore", f"{snapshot}:{data}", "--target", str(target)
    )
    assert restored.returncode == 0, restored.stderr
    assert (target / "a.bin").read_bytes() == (data / "a.bin").read_bytes()
    refused = _restic(url, read, "backup", str(data))
    assert refused.returncode != 0
    # No locks are left behind by the append grant's runs.
    assert _restic(url, read, "--no-lock", "list", "locks").stdout.strip() == ""


def test_bad_credentials_and_requests_are_refused(gateway: tuple[RepositoryGateway, str]) -> None:
    logic, url = gateway
    append = _grant("append")
    assert _raw(url, "GET", "/config", append) == 200
    assert _raw(url, "GET", "/config", None) == 401
    expired = _grant("read", valid=-5)
    assert _raw(url, "GET", "/config", expired) == 401
    forged = Grant("ops", "readwrite", "repositories/other", "append", append.expires, "x")
    user, _ = sign(KEY, forged)
    request = urllib.request.Request(url + "config", method="GET")  # noqa: S310 - loopback
    token = base64.b64encode(f"{user}:{sign(b'z' * 32, forged)[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback
    assert err.value.code == 401
    revoked = _grant("read")
    logic.revoke(revoked)
    assert _raw(url, "GET", "/config", revoked) == 401
    # A file whose name is not the hash of its content is refused; so is config, a key, a
    # delete of data, a path outside the protocol, and any write to a ReadOnly location.
    junk = b"not what the name says"
    assert _raw(url, "POST", "/data/" + "0" * 64, append, junk) == 400
    name = hashlib.sha256(junk).hexdigest()
    assert _raw(url, "POST", "/config", append, junk) == 403
    assert _raw(url, "POST", f"/keys/{name}", append, junk) == 403
    assert _raw(url, "POST", f"/data/{name}", append, junk) == 200
    assert _raw(url, "DELETE", f"/data/{name}", append) == 403
    assert _raw(url, "GET", "/../../other/config", append) == 404
    assert _raw(url, "POST", "/?create=true", append) == 404
    readonly = _grant("append", location="readonly")
    assert _raw(url, "POST", f"/snapshots/{name}", readonly, junk) == 403
