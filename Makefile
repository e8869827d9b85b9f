# The two commands: `make run` and `make test`.  Both bootstrap .venv from nothing
# and are quick when nothing changed.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
DEMO   ?= demo

# Everything the native core is built from: Cython (the module, its declarations, its
# includes, the declarations of the C headers) and C (engine/native/ and its folders).
CORE_CYTHON  := $(wildcard engine/_core.pyx engine/_core.pxd engine/_core_*.pxi engine/includes/*.pxd)
CORE_SOURCES := $(CORE_CYTHON) $(wildcard engine/native/*.[ch] engine/native/*/*.[ch]) setup.py

.PHONY: run test lint build bench bench-quick clean packages check-monitoring

# The environment: a venv with the build tools, then the project in editable mode
# with its test and benchmark extras.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q "setuptools>=77" wheel "cython>=3.0" "numpy>=1.26"
	$(VPY) -m pip install -q --no-build-isolation -e '.[test,bench]'
	touch $@

# The native core, rebuilt in place whenever a Cython or C source changes.
$(VENV)/.core-built: $(VENV)/.installed $(CORE_SOURCES)
	$(VPY) setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.core-built

# The real servers the fleet runs on and its tests start (Debian packages, installed
# where missing; tests/realservers.py says what a machine without them lacks).
FLEET_PACKAGES := redis-server redis-tools haproxy nginx
# promtool, which checks the shipped Prometheus rules, their unit tests and the engine's
# exposition (make check-monitoring, tests/test_monitoring.py).
MONITORING_PACKAGES := prometheus
packages:
	@bash scripts/require-packages.sh $(FLEET_PACKAGES) $(MONITORING_PACKAGES) || \
		echo "make: $(FLEET_PACKAGES) $(MONITORING_PACKAGES) could not be installed: the tests that need them will say so" >&2

# The shipped alert rules (deploy/prometheus/): valid, and passing their unit tests.
# tests/test_monitoring.py runs these too, and checks the dashboard and the exposition.
PROMTOOL ?= promtool
check-monitoring: packages
	$(PROMTOOL) check rules deploy/prometheus/essc-alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/essc-alerts-test.yml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check engine loadgen bench tests fuzz setup.py
	$(VENV)/bin/ruff format --check engine loadgen bench tests fuzz setup.py
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cython-lint $(CORE_CYTHON)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing: for this suite that means something is
# broken, so it is reported as such rather than passed over.
test: build lint packages
	@$(VPY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Side-by-side comparisons (ratios against baselines measured in the same run) and the
# pytest-benchmark suites; JSON results go to var/bench/ for pytest-benchmark compare.
bench: build
	mkdir -p var/bench
	$(VPY) -m bench.compare --json var/bench/compare.json
	$(VPY) -m pytest -q -p no:cacheprovider bench --benchmark-json=var/bench/suites.json \
		--benchmark-columns=mean,ops,rounds

# The same in seconds (small sizes, few rounds: 0.05 s of rounds per case): CI runs it
# so the suites never rot.
bench-quick: build
	mkdir -p var/bench
	ESSC_BENCH_QUICK=1 $(VPY) -m pytest -q -p no:cacheprovider bench --benchmark-max-time=0.05 \
		--benchmark-json=var/bench/suites-quick.json --benchmark-columns=mean,ops,rounds
	$(VPY) -m bench.compare --quick --json var/bench/compare-quick.json

run: build
	$(VPY) -m engine demo --dir $(DEMO)
	$(VPY) -m engine serve --demo $(DEMO)

# A short load against `make run`'s server (docs/OPERATIONS.md, "Load generation").  The
# corpus is made once from the demo PKI (again when the demo trust list changes) into
# $(DEMO)/corpus; its revoked ids go into the demo's revocation snapshot when the engine
# builds one (the demo server watches the file), and are left out of the run, with a
# note, when the server does not hold them.
LOAD_TARGET   ?= 127.0.0.1:7700
LOAD_RATE     ?= 2000
LOAD_DURATION ?= 10
LOAD_CARDS    ?= 10000
LOAD_ARGS     ?=

# A fleet on this machine (docs/DEPLOYMENT.md): Redis, three engine nodes sharing it,
# HAProxy on 127.0.0.1:7700 in front (so `make load` runs through it); Ctrl-C stops it.
.PHONY: fleet
fleet: build packages
	$(VPY) -m engine fleet --demo $(DEMO)

.PHONY: load
load: build $(DEMO)/corpus/corpus.json
	@$(VPY) -c "import pathlib, engine.tools.demo as d; d.build_demo_revocation(pathlib.Path('$(DEMO)'))"
	$(VPY) -m loadgen run --target $(LOAD_TARGET) --corpus $(DEMO)/corpus \
		--rate $(LOAD_RATE) --duration $(LOAD_DURATION) --warmup 2 \
		--on-missing-revocation exclude --revocation-wait 10 \
		--json $(DEMO)/load.json --report $(DEMO)/load.html $(LOAD_ARGS)

$(DEMO)/corpus/corpus.json: $(DEMO)/pki/trustlist.essc | build
	$(VPY) -m loadgen corpus --pki $(DEMO)/pki --cards $(LOAD_CARDS) --out $(DEMO)/corpus

$(DEMO)/pki/trustlist.essc:
	@echo "make load: no demo trust material in $(DEMO)/pki: start the server with 'make run' first" >&2
	@exit 2

clean:
	rm -rf build dist $(VENV) engine/_core.c engine/_core*.so .stamp-*

# The distributions (scripts/wheel-smoke.sh): `make wheel` builds dist/, the sdist and,
# from it, the wheel (no sources, no debug information, repaired by auditwheel to its
# manylinux tag); `make wheel-smoke` builds them and tries the wheel as a user gets it,
# in a fresh virtualenv, or tries WHEEL=FILE instead.
WHEEL ?=
.PHONY: wheel wheel-smoke
wheel: $(VENV)/.installed
	VPY=$(CURDIR)/$(VPY) bash scripts/wheel-smoke.sh --build-only

wheel-smoke: $(VENV)/.installed
	VPY=$(CURDIR)/$(VPY) bash scripts/wheel-smoke.sh $(WHEEL)

# The systemd unit (deploy/systemd/, docs/SYSTEMD.md): systemd-analyze verify, the
# sandbox's exposure score (at most 2.0) and the sysusers snippet; installs the systemd
# package where missing (SKIPPED where it cannot, FAILED under CI=true).
.PHONY: check-unit
check-unit: build
	ENGINE_BIN=$(CURDIR)/$(VENV)/bin/essc-engine bash scripts/check-systemd-unit.sh

# Coverage-guided fuzzing of the native parsers (docs/TESTING.md, "Fuzzing"): each
# harness for FUZZ_SECONDS (make fuzz) or FUZZ_CI_SECONDS (make fuzz-ci, what CI runs).
# Builds into build/fuzz/, grows corpora in var/fuzz/, findings in var/fuzz/findings/.
FUZZ_SECONDS    ?= 180
FUZZ_CI_SECONDS ?= 15

.PHONY: fuzz fuzz-ci
fuzz: build
	VPY=$(CURDIR)/$(VPY) FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

fuzz-ci: build
	VPY=$(CURDIR)/$(VPY) FUZZ_SECONDS=$(FUZZ_CI_SECONDS) bash fuzz/run.sh

# The native core built with AddressSanitizer + UBSan in a copy of the tree (build/asan/;
# the in-place engine/_core*.so is left alone) and the tests run against it
# (docs/TESTING.md, "Sanitizers").  PYTEST_ARGS as for `make test`.
.PHONY: test-asan
test-asan: $(VENV)/.installed
	VPY=$(CURDIR)/$(VPY) bash scripts/test-asan.sh $(PYTEST_ARGS)
