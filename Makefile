# Overland: `make run` starts the system on embedded defaults; `make test` sets up and passes every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := qemu-utils tshark iperf3 rsync iputils-ping debootstrap docker.io iproute2 prometheus
# Real VMs: qemu, and what the guest image is built from (the kernel installs into this machine's
# /boot and /lib/modules, which is where the build reads it).
GUEST_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static e2fsprogs kmod
PROTO_OUT := sdk/src
PROTOS := $(wildcard protos/overland/v1/*.proto)

.PHONY: all run test lint unit integration proto proto-check docs docs-check bench deps-apt deps-guest guest venv clean docker-up images

all: test

deps-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deps-guest:
	@$(MAKE) --no-print-directory deps-apt APT_PACKAGES="$(GUEST_PACKAGES)"

$(STAMP): pyproject.toml sdk/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e './sdk[cli]' -e '.[dev]'
	touch $@

venv: $(STAMP)

# Regenerate the committed protobuf code; never edit it by hand. The _pb2_grpc.pyi stubs (typed stubs,
# servicers and their contexts) come from mypy-protobuf's plugin, so that mypy checks every call and
# servicer method against the API.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)

proto-check: proto
	@git diff --exit-code -- $(PROTO_OUT)/overland/v1 || { echo "generated code is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(PROTO_OUT)/overland/v1)" || { echo "generated code is not committed"; git status --porcelain -- $(PROTO_OUT)/overland/v1; exit 1; }

# docs/cli.md's command reference is generated from the CLI: docs-check (part of lint, like
# proto-check for the generated code) and tests/unit/sdk/test_cli_docs.py fail when it is stale.
docs: $(STAMP)
	$(BIN)/python -m tools.cli_docs

docs-check: $(STAMP)
	$(BIN)/python -m tools.cli_docs --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs-check

unit: deps-apt deps-guest $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) deps-apt images guest
	$(BIN)/pytest -q tests/integration

test: deps-apt deps-guest $(STAMP)
	$(MAKE) lint
	$(MAKE) proto-check
	$(MAKE) unit
	$(MAKE) integration

run: deps-apt $(STAMP)
	$(BIN)/python -m services.devstack

# A local Docker engine (bridge and pools in 198.19.0.0/16) and the images, built with no registry.
docker-up: deps-apt
	tools/docker.sh

images: docker-up $(STAMP)
	$(BIN)/python tools/build_images.py

# The guest image for real VMs, under .overland/guest/ (from Debian packages only; cached by its inputs).
guest: deps-guest $(STAMP)
	$(BIN)/python tools/build_guest.py

bench: deps-apt $(STAMP) guest
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .overland .mypy_cache .ruff_cache .pytest_cache
