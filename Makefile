# The two set-up commands of the README are `make demo` and `make test`.
# Both work on a fresh Debian 12 machine as root: they install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv check unit lab-test test demo demo-ha dry-run bench bench-lab bench-checks clean deb deb-deps man \
	readme package-test

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

# deb: tests/e2e/test_lab_deb.py installs the package in the guest.
lab-test: venv deb
	$(BIN)/python -m lab pytest

# The whole test suite: lint, types, unit and CLI tests on the host (fakes only),
# the Debian package (built, lintian, man pages), then the real-kernel tests inside the
# lab VM (among them the package installed, used and purged in the guest).
test: check unit package-test lab-test

# --- the Debian package -------------------------------------------------------------
# `make deb` on a fresh Debian 12 machine as root: installs the build dependencies, then
# dpkg-buildpackage in a copy of the tree under build/deb/ (it writes its results into
# the parent directory of the tree it builds: build/deb/, not outside the checkout).
VERSION := $(shell sed -n 's/^version *= *//p' setup.cfg)
DEB_DIR := build/deb
DEB := $(DEB_DIR)/lvs-scripts_$(VERSION)_all.deb
BUILD_DEPS := build-essential debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools lintian man-db
# What the package depends on: tests/test_deb.py installs nothing, but the lab guest
# installs the package offline from the host's own packages (lab/prepare.py).

deb-deps:
	@if ! dpkg-checkbuilddeps debian/control >/dev/null 2>&1 || ! command -v lintian >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(BUILD_DEPS) \
	    || { apt-get update -q && apt-get install -y -q --no-install-recommends $(BUILD_DEPS); }; \
	fi

deb: deb-deps
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/lvs-scripts-$(VERSION)
	tar -c --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./lab-results \
	    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache \
	    --exclude=.ruff_cache --exclude=.pytest_cache . \
	    | tar -x -C $(DEB_DIR)/lvs-scripts-$(VERSION)
	# Debian's python3, not one that a PATH (pyenv, a venv) may put first.
	cd $(DEB_DIR)/lvs-scripts-$(VERSION) \
	    && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	@echo "built $(DEB)"

# lintian, the package's contents and its man pages (tests/test_deb.py), and the
# README's pipx path (tests/test_pipx.py: Debian's pipx, plumbum from PyPI).
package-test: deb venv
	command -v pipx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q pipx \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pipx; }
	LVS_DEB=$(DEB) LVS_PIPX_TEST=1 $(BIN)/pytest -q -p no:xdist tests/test_deb.py tests/test_pipx.py

# The man pages, from cli.py's parsers and doc/lvs.toml.md, into build/man/.
man:
	$(PY) -m lvs_scripts.manpage build/man

# README.md's section "The config file" from doc/lvs.toml.md (a test keeps them equal).
readme:
	$(PY) -m lvs_scripts.manpage --readme

# The main job: the document's topology in a VM, configured by our init.d scripts.
demo: venv
	$(BIN)/python -m lab demo

# Two directors (examples/lab-ha.toml): a crash failover that keeps an open connection,
# the failback and a planned stop, in the same VM.
demo-ha: venv
	$(BIN)/python -m lab demo --ha

# The corrected Director script, printed, nothing changed.
dry-run: venv
	$(BIN)/lvs-director -c examples/seed-dr.toml --dry-run start

bench: venv
	$(BIN)/python bench/bench.py

# Ours, keepalived and the seed's style side by side on the lab VM's kernel (about 30 min).
# Ours as installed from the package (--installed), as keepalived is from Debian's.
bench-lab: venv deb
	$(BIN)/python -m lab run --vm-timeout 3600 -- $(BIN)/python bench/bench_lab.py \
	    --installed $(DEB_DIR)/lvs-scripts_$(VERSION)_all.deb

# Health checks: checks/s, CPU per 1,000 checks, peak RSS (loopback listeners only).
bench-checks: venv
	$(BIN)/python bench/bench_checks.py

clean:
	rm -rf $(VENV) build *.egg-info lab-results
