# Two commands for a newcomer: `make run` (the main job on the bundled demo data) and `make test`.
# Both create .venv from nothing: torch's CPU build first (a plain `torch` requirement would pull CUDA),
# then this package with its dev extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.fewframes-installed
PRESET ?= demo
PYTEST_ARGS ?=

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fewframes run --preset $(PRESET)

# Every pytest run (this one, benchmarks/gpu.sh's, a plain `pytest`) gets its own base temp folder from
# tests/conftest.py, so two runs at once never share /tmp/pytest-of-$USER; --basetemp in PYTEST_ARGS overrides it.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
