"""Safehold: backup, restore and verification for Kubernetes workloads."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("safehold")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

GROUP = "safehold.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
