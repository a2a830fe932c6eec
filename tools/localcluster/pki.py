"""Per-run keys and certificates for the local control plane, made with the `openssl` CLI.

All keys are ECDSA P-256 (fast to generate): a throw-away CA, the API server's serving certificate
signed by it (SANs 127.0.0.1, localhost and the in-cluster names of the `kubernetes` Service) and
the service-account token signing key pair.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CURVE = ("-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def first_service_ip(service_cidr: str) -> str:
    """The ClusterIP of the `kubernetes` Service (first address of the range)."""
    net = ipaddress.ip_network(service_cidr, strict=False)
    return str(net.network_address + 1)


def generate(directory: Path, service_cidr: str) -> Pki:
    """Write a fresh CA, serving certificate and service-account key pair into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "ec", *_CURVE, "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=safehold-localcluster-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=d,
    )  # fmt: skip
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{first_service_ip(service_cidr)}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    (d / "apiserver.ext").write_text(
        f"subjectAltName={sans}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", *_CURVE, "-nodes",
        "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "365", "-extfile", "apiserver.ext", "-out", "apiserver.crt",
        cwd=d,
    )  # fmt: skip
    _openssl("genpkey", "-algorithm", "EC", *_CURVE, "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for key in ("ca.key", "apiserver.key", "sa.key"):
        (d / key).chmod(0o600)
    return Pki(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=d / "apiserver.crt",
        serving_key=d / "apiserver.key",
        sa_key=d / "sa.key",
        sa_pub=d / "sa.pub",
    )


@dataclass(frozen=True)
class ServerTls:
    ca_cert: Path
    cert: Path
    key: Path


def server_tls(directory: Path, sans: str = "IP:127.0.0.1,DNS:localhost") -> ServerTls:
    """A throw-away CA and a serving certificate it signed, for a test database server."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "ec", *_CURVE, "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
        "-subj", f"/CN=safehold-test-ca-{d.name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=d,
    )  # fmt: skip
    (d / "server.ext").write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", *_CURVE, "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=safehold-test-db",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "30", "-extfile", "server.ext", "-out", "server.crt",
        cwd=d,
    )  # fmt: skip
    for key in ("ca.key", "server.key"):
        (d / key).chmod(0o600)
    return ServerTls(ca_cert=d / "ca.crt", cert=d / "server.crt", key=d / "server.key")
