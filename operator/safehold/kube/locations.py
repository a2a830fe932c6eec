"""Turn a BackupStorageLocation spec plus its Secrets into connection settings."""

from __future__ import annotations

from kubernetes import client

from safehold.api.location import BackupStorageLocationSpec
from safehold.kube.secrets import read_secret_key
from safehold.storage.location import ResolvedLocation
from safehold.storage.s3 import S3Settings


def resolve_location(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    spec: BackupStorageLocationSpec,
    *,
    with_newline: bool = False,
) -> ResolvedLocation:
    """Read the credentials and password Secrets; raises SecretProblem. `with_newline`: what
    the location's probe found (planning.locations.password_with_newline)."""
    creds = spec.credentials_secret
    access_key = read_secret_key(core, namespace, creds.name, creds.access_key_id_key)
    secret_key = read_secret_key(core, namespace, creds.name, creds.secret_access_key_key)
    pw = spec.repository_password_secret
    password = read_secret_key(core, namespace, pw.name, pw.key)
    s3 = S3Settings(
        bucket=spec.bucket,
        prefix=spec.prefix,
        region=spec.region,
        endpoint=spec.endpoint,
        force_path_style=spec.force_path_style,
        access_key_id=access_key,
        secret_access_key=secret_key,
        ca_bundle=spec.ca_bundle,
        insecure_skip_tls_verify=spec.insecure_skip_tls_verify,
    )
    return ResolvedLocation(namespace, name, spec, s3, password, with_newline)
