# Safehold developer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.tools/bin:$(PATH)
PYTEST_ARGS ?=
# Parallel workers of `make test` (tests/conftest.py groups tests by module); 0 runs serially.
PYTEST_WORKERS ?= 3

.PHONY: help tools test lint unit integration e2e demo crds fmt clean image image-save image-test node-tools node-images node-test e2e-podman

help:
	@echo "make demo         local control plane, object store, operator: backup, disaster, restore"
	@echo "make test         lint, type check, CRD drift check, image, unit, integration and node tests"
	@echo "make tools        install pinned tools (cached in ~/.cache/safehold) and Python deps"
	@echo "make crds         regenerate crds/ (and the chart's copy) from the models"
	@echo "make e2e          opt-in end-to-end tier on kind (needs a Docker engine)"
	@echo "make e2e-podman   the same tier on kind's podman provider, no Docker or registry (root)"
	@echo "make image        build localhost/safehold:dev with podman (tools/image; pins from tools/versions.env)"
	@echo "make image-save   also write it as an OCI archive (build/image/safehold-oci.tar) for containerd"
	@echo "make node-images  PostgreSQL and SeaweedFS images of the end-to-end round trip (root)"
	@echo "make node-test    only the real-node tier, end-to-end round trip included (root)"

tools:
	tools/bootstrap all

crds: tools
	safehold crds generate --out crds
	safehold crds generate --out charts/safehold/crds-source
	safehold docs generate --path docs/api.md

lint: tools
	ruff check operator tools tests
	ruff format --check operator tools tests
	mypy
	lint-imports
	safehold crds check --dir crds
	safehold crds check --dir charts/safehold/crds-source
	safehold docs check --path docs/api.md

unit: tools
	pytest tests/unit -q $(PYTEST_ARGS)

integration: tools
	pytest tests/integration $(PYTEST_ARGS)

test: tools lint image-save node-tools node-images
	pytest tests -n $(PYTEST_WORKERS) --durations=30 $(PYTEST_ARGS)

# The image: podman + a debootstrap base (no registry here); cold about a minute, warm seconds.
image: tools
	tools/image build

image-save: image
	tools/image save

image-test: image
	pytest tests/image $(PYTEST_ARGS)

# A real kubelet + containerd node running pods of our image: root only (tests/node skips
# elsewhere; SAFEHOLD_REAL_NODE=0 skips it anyway). Builds kubelet + kube-scheduler once.
node-tools: tools
	@if [ "$$(id -u)" = 0 ]; then tools/bootstrap node; else echo "not root: no real node"; fi

# The PostgreSQL and SeaweedFS images the end-to-end round trip runs in pods (tools/images/).
node-images: tools
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory build/image/postgres-oci.tar build/image/seaweedfs-oci.tar; \
	else echo "not root: no node images"; fi

build/image/postgres-oci.tar: tools/images/postgres.Containerfile tools/versions.env
	tools/image postgres $@

build/image/seaweedfs-oci.tar: tools/images/seaweedfs.Containerfile tools/versions.env
	tools/image seaweedfs $@

node-test: image-save node-tools node-images
	SAFEHOLD_REAL_NODE=1 pytest tests/node $(PYTEST_ARGS)

e2e: tools
	SAFEHOLD_E2E_KIND=1 pytest tests/e2e $(PYTEST_ARGS)

# kind without Docker: a node image built here, kind's podman provider (tools/kind/kind).
e2e-podman: image node-tools
	tools/kind/kind e2e $(PYTEST_ARGS)

demo: tools
	python tools/demo.py

fmt: tools
	ruff check --fix operator tools tests
	ruff format operator tools tests

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache _artifacts
