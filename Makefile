# gpuforge: `make images` (the farm's main job) and `make test` each do their own set-up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: all venv host-deps images drivers lint test test-unit test-e2e bench bench-validator bench-gpu bench-images bench-builder bench-fleet bench-containers clean

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

host-deps:
	bash scripts/host-deps.sh

## The farm's main job: precompiled driver packages + apt repo, then golden images, on the default matrix.
images: venv host-deps
	$(BIN)/gpuforge build drivers
	$(BIN)/gpuforge build images

# ruff over the whole tree, mypy over builder/ (configured in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv host-deps lint
	$(BIN)/pytest -q tests

test-unit: venv
	$(BIN)/pytest -q -m "not e2e" tests

test-e2e: venv host-deps
	$(BIN)/pytest -q -m e2e tests

# What runs on a build host without a GPU; bench-gpu needs a node with NVIDIA GPUs and PyTorch or CuPy.
bench: bench-validator bench-builder bench-images bench-containers

bench-validator: venv
	$(BIN)/python bench/bench_validator.py

bench-gpu: venv
	$(BIN)/python bench/bench_gpu.py

bench-images: venv host-deps
	$(BIN)/python bench/bench_images.py

bench-builder: venv host-deps
	$(BIN)/python bench/bench_builder.py

# Two qemu guests + Ansible deploy.yml (first run, re-run); native DKMS vs precompiled install in a container.
bench-fleet: venv host-deps
	$(BIN)/python bench/bench_fleet.py

bench-containers: venv host-deps
	$(BIN)/python bench/bench_containers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
