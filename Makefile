# Two commands matter: `make run` and `make test`. Each creates .venv when missing and
# installs the project into it (pip takes torch/torchvision from this machine's disk).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/digits.yaml
# Tiny models run fastest on one thread; contending threads on 2 cores are 10-50x slower.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: run test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/nnrecipe run --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/ruff format --check nnrecipe tests bench examples
	$(VENV)/bin/ruff check nnrecipe tests bench examples
	$(VENV)/bin/mypy  # the whole package ([tool.mypy] in pyproject.toml)
	$(PY) -m pytest -q --durations=15  # the slowest tests in every CI log: the suite must stay well under 10 min

bench: $(STAMP)  # benchmarks are run by hand, never as tests
	$(PY) bench/engine_overhead.py
	$(PY) bench/data_scan.py
	$(PY) bench/stage_cost.py --scaling

clean:
	rm -rf runs .pytest_cache build *.egg-info
