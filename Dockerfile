# syntax=docker/dockerfile:1
# Safehold: one image for the operator and the movers (`safehold operator`, `safehold mover …`).
#
# Every version comes from tools/versions.env (the one place where pins live); this file has no
# defaults for them, so a build without the arguments fails instead of drifting. Build with
#
#   make image                                  # podman, local debootstrap base (tools/image)
#   docker build $(tools/image args) -t safehold:dev .   # Docker: Debian slim base, see below
#
# `tools/image args` prints `--build-arg NAME=value` for every pin this file reads.
#
# restic: the pinned binary built by tools/bootstrap (`make tools`) is copied from the build
# context when tools/image has staged it at build/image/restic. Where no such binary exists
# (a plain Docker build of a fresh clone), the restic stage compiles the same pinned version
# with `go install`, in RESTIC_BUILDER_IMAGE = GO_IMAGE from versions.env.
#
# The runtime runs as UID/GID 65532 with a read-only root filesystem: HOME, TMPDIR and the
# caches point at /tmp, which the pod mounts as an emptyDir (or `--tmpfs /tmp`).

ARG BASE_IMAGE=debian:bookworm-slim
ARG RESTIC_BUILDER_IMAGE

# ---------------------------------------------------------------- restic, pinned
# RESTIC_BUILDER_IMAGE is a Go image (GO_IMAGE) for Docker builds; tools/image passes the base
# image instead, since the binary comes from the build context and no Go is needed.
FROM ${RESTIC_BUILDER_IMAGE} AS restic
ARG RESTIC_VERSION
ARG RESTIC_MODULE_SUM
# versions.env is listed so the COPY never has zero sources; restic* may match nothing.
COPY tools/versions.env build/image/restic* /ctx/
# The module is checked against the pinned hash (as tools/bootstrap does), its go.sum then
# checks the dependencies.
RUN set -e; test -n "$RESTIC_VERSION"; mkdir -p /out; \
    if [ -x /ctx/restic ]; then cp /ctx/restic /out/restic; \
    else export GONOSUMDB=github.com/restic/restic; \
      sum=$(go mod download -json "github.com/restic/restic@${RESTIC_VERSION}" \
        | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p'); \
      test "$sum" = "$RESTIC_MODULE_SUM" || { echo "restic module hash $sum is not the pinned one" >&2; exit 1; }; \
      CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" \
        "github.com/restic/restic/cmd/restic@${RESTIC_VERSION}"; fi

# ---------------------------------------------------------------- Python environment
FROM ${BASE_IMAGE} AS python-build
ARG UV_VERSION
# A CA bundle for HTTPS through an intercepting proxy, mounted into the build by tools/image
# (`-v host-ca.crt:…:ro`); never baked into an image layer.
ARG PIP_CERT=
ENV DEBIAN_FRONTEND=noninteractive
RUN test -n "$UV_VERSION" \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install -q --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
ENV UV_PROJECT_ENVIRONMENT=/opt/safehold \
    UV_PYTHON=/usr/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# Dependencies first (from uv.lock, without dev extras), so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
# Then the safehold package itself, built as a wheel from pyproject.toml and installed.
COPY operator ./operator
RUN if [ -n "$PIP_CERT" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi \
 && /opt/uv/bin/uv sync --frozen --no-dev --no-editable \
 && /opt/safehold/bin/safehold --version

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
ARG POSTGRESQL_MAJOR
ARG RESTIC_VERSION
ENV DEBIAN_FRONTEND=noninteractive
RUN test -n "$POSTGRESQL_MAJOR" \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      python3 ca-certificates tzdata \
      "postgresql-client-${POSTGRESQL_MAJOR}" mariadb-client redis-tools redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=restic /out/restic /usr/local/bin/restic
COPY --from=python-build /opt/safehold /opt/safehold
RUN restic version | grep -q "restic ${RESTIC_VERSION#v} " \
 || { echo "restic in the image is not ${RESTIC_VERSION}: $(restic version)" >&2; exit 1; }
# A passwd entry for the default UID, and USER for any other UID a mover runs as: Kopf (via
# getpass.getuser) fails at start-up when the process's user has no name.
RUN groupadd --gid 65532 safehold \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin safehold
ENV PATH=/opt/safehold/bin:/usr/lib/postgresql/${POSTGRESQL_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    USER=safehold \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    RESTIC_CACHE_DIR=/tmp/.cache/restic \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
LABEL org.opencontainers.image.title="safehold" \
      org.opencontainers.image.description="Kubernetes backup operator and movers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.safehold.restic-version="${RESTIC_VERSION}" \
      io.safehold.postgresql-major="${POSTGRESQL_MAJOR}"
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["safehold"]
CMD ["--help"]
