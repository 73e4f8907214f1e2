# The two set-up commands of the README are `make demo` and `make test`.
# Both work on a fresh Debian 12 machine as root: they install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv check unit lab-test test demo dry-run bench bench-checks clean

venv: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

check: venv
	$(BIN)/ruff check lvs_scripts tests lab bench
	$(BIN)/mypy --strict lvs_scripts

unit: venv
	$(BIN)/pytest -q -n 2

lab-test: venv
	$(BIN)/python -m lab pytest

# The whole test suite: lint, types, unit and CLI tests on the host (fakes only),
# then the real-kernel tests inside the lab VM.
test: check unit lab-test

# The main job: the document's topology in a VM, configured by our init.d scripts.
demo: venv
	$(BIN)/python -m lab demo

# The corrected Director script, printed, nothing changed.
dry-run: venv
	$(BIN)/lvs-director -c examples/seed-dr.toml --dry-run start

bench: venv
	$(BIN)/python bench/bench.py

# Health checks: checks/s, CPU per 1,000 checks, peak RSS (loopback listeners only).
bench-checks: venv
	$(BIN)/python bench/bench_checks.py

clean:
	rm -rf $(VENV) build *.egg-info lab-results
