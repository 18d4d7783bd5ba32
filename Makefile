# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.[all,dev]'  # no .pyc pass over torch's 20k files: faster first install
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeopt demo --out $(OUT)/demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/backends.py

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
