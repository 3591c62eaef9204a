# `make test` is the one test command (README, .ci/run). It creates .venv when missing,
# installs the project with its dev extra into it, then runs pytest. `make demo` needs only the
# core dependencies (a user's first command should not wait for the test and export extras).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.reslearn-installed
CORE   := $(VENV)/.reslearn-core-installed
# Preparing the project's own copies from ../shared/data needs soundfile (the dev extra has it);
# without that folder (a user's machine) only Debian's Fashion-MNIST is prepared.
DATA_DEPS := $(if $(wildcard ../shared/data),$(STAMP),$(CORE))

.PHONY: demo test install readme data bench clean-venv

# The first command: set up, find or install data, train plain-20/56 and ResNet-20/56, verdict.
demo: $(CORE) data
	$(PY) -m reslearn.cli demo

data: $(DATA_DEPS)
	PY=$(PY) bash scripts/prepare_data.sh

bench: $(STAMP) data
	$(PY) benchmarks/pipeline.py --data .data
	$(PY) benchmarks/inference.py --data .data
	$(PY) benchmarks/train_step.py

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

install: $(STAMP)

# Re-install when the dependency list changes.
$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

readme: $(STAMP)
	$(PY) scripts/update_readme.py
