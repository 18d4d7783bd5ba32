# Two commands on a fresh machine: `make demo` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FULL := $(VENV)/.installed        # every CPU backend and the test tools
DEMO := $(VENV)/.demo-installed   # what the demo needs: torch, ONNX Runtime, OpenVINO, plots
OUT := out
PARALLEL := -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder  # one worker per core; conftest's order
PIP := $(BIN)/python -m pip install -q --no-compile  # no .pyc pass over torch's 20k files: a faster first install

.PHONY: install demo test test-cluster test-fast lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(DEMO): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e '.[demo]'
	touch $(DEMO)

$(FULL): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e '.[all,dev]'
	touch $(FULL) $(DEMO)

install: $(FULL)

demo: $(DEMO)
	$(BIN)/edgeopt demo --out $(OUT)/demo

test: $(FULL)  ## the whole suite: unit, doctests, backend conformance, CLI end to end, real data when present
	$(BIN)/python -m pytest $(PARALLEL)
	$(MAKE) --no-print-directory test-cluster

# Ray advertises the machine's address and listens on every interface: its tests run in a network
# namespace that holds only loopback (root's `unshare --net`); elsewhere they are reported as not run.
test-cluster: $(FULL)  ## a search on a real Ray cluster (head + two worker nodes), on loopback only
	@if unshare --net true 2>/dev/null; then \
		unshare --net sh -c 'ip link set lo up && $(BIN)/python -m pytest tests/cluster'; \
	else echo "cluster tests NOT run: they need a network namespace of their own (unshare --net, as root)"; fi

test-fast: $(FULL)  ## unit, doctests, conformance on tiny models and CLI smoke tests: a few minutes
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow"

lint: $(FULL)  ## the layer contracts of pyproject.toml
	$(BIN)/lint-imports

bench: $(FULL)
	$(BIN)/python benchmarks/backends.py

clean:
	rm -rf $(VENV) $(OUT) *.egg-info build dist
