# `make test` is the one test command (README, .ci/run). It creates .venv when missing,
# installs the project with its dev extra into it, then runs pytest.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.reslearn-installed

.PHONY: demo test install readme data bench clean-venv

# The first command: set up, prepare offline data, train resnet20 and plain20 briefly, compare.
demo: $(STAMP) data
	$(PY) -m reslearn.cli demo

data: $(STAMP)
	PY=$(PY) bash scripts/prepare_data.sh

bench: $(STAMP) data
	$(PY) benchmarks/pipeline.py --data .data
	$(PY) benchmarks/inference.py --data .data

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

install: $(STAMP)

# Re-install when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

readme: $(STAMP)
	$(PY) scripts/update_readme.py
