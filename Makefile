# mixlab: every target sets itself up on a fresh machine (a venv in .venv).
# torch is installed first, pinned, so pip never pulls a CUDA build you did not
# ask for: `make test TORCH_VERSION=2.5.1` to change it.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: install test test-all demo showcase speed lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[lab,dev]"
	touch $@

install: $(STAMP)

test: install  ## fast tests (CI)
	$(PY) -m pytest -q -m "not slow"

test-all: install  ## everything, real training included
	$(PY) -m pytest -q

demo: install  ## the main job: a 5-method x 3-seed benchmark on the bundled digits
	$(VENV)/bin/mixlab bench
	$(PY) -m mixlab.lab.showcase --out runs/demo/showcase.png

showcase: install  ## gallery of every method on real photos
	$(PY) -m mixlab.lab.showcase --out out/showcase.png

speed: install  ## mixing speed beside its floors
	$(PY) benchmarks/mixing.py --json out/mixing-cpu.json

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) out runs
