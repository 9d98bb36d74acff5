# Two entry points for newcomers: `make run` and `make test`. Each creates ./.venv and
# installs what it needs from scratch (pinned by constraints.txt) the first time.

PYTHON ?= python3
VENV ?= .venv
# A second, older openai SDK (2.26: JSON create) for the end-to-end tests to drive as well.
SDK2_VENV ?= .venv-sdk2
# LiteLLM, the benchmark's comparison point, in a virtualenv of its own (bench/litellm/).
BENCH_VENV ?= .venv-bench-litellm
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 1
# Seconds a stop (SIGTERM, Ctrl-C) waits for requests in flight, downloads included; then they are
# cut, and noted as error class `shutdown`.
RELAY_SHUTDOWN_TIMEOUT_SECONDS ?= 30
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian's own Python ships venv without ensurepip; its python3-venv package adds it.
define make_venv
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		echo "Installing Debian's python3-venv, which virtualenvs need"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(1)
endef

# The live-Prometheus tests need Debian's prometheus package (prometheus and promtool). It is
# installed when missing; its system service is then stopped and disabled, since the tests run
# their own instance on a free port. Without apt-get, install both yourself (the tests skip
# without them, and fail under CI=true).
define ensure_prometheus
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		if command -v apt-get >/dev/null; then \
			echo "Installing Debian's prometheus (prometheus, promtool) for the live-Prometheus tests"; \
			$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus || exit 1; \
			if command -v systemctl >/dev/null; then $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
		else \
			echo "prometheus/promtool not found and no apt-get: install them for the live-Prometheus tests"; \
		fi; \
	fi
endef

# The PostgreSQL tests need Debian's postgresql package: initdb and postgres, which Debian keeps in
# /usr/lib/postgresql/<version>/bin, off PATH (tests/postgres_cluster.py looks there). Installing
# it creates and starts a "main" cluster on port 5432 where a service manager runs; that service is
# stopped and disabled, since the tests start a throwaway cluster of their own on a free port.
# Without apt-get, install PostgreSQL's server yourself (the tests skip without it, and fail under
# CI=true).
define ensure_postgresql
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null; then \
			echo "Installing Debian's postgresql for the PostgreSQL tests"; \
			$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends postgresql || exit 1; \
			if command -v systemctl >/dev/null; then $(SUDO) systemctl disable --now postgresql >/dev/null 2>&1 || true; fi; \
		else \
			echo "PostgreSQL's initdb not found and no apt-get: install PostgreSQL's server for the PostgreSQL tests"; \
		fi; \
	fi
endef

# The benchmark's mock upstream and load generator: Debian's nginx and wrk. Installing nginx
# starts its system service on port 80 where a service manager runs; the benchmark starts its
# own instance on a free loopback port, so the service is stopped and disabled again. The nginx
# configuration for offloaded downloads (docs/nginx/relay-offload.conf) names Debian's CA bundle,
# which nginx reads at start: ca-certificates provides it.
define ensure_bench_tools
	@if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } \
		|| [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then \
		if command -v apt-get >/dev/null; then \
			echo "Installing Debian's nginx-light, wrk and ca-certificates for the benchmark"; \
			$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends nginx-light wrk ca-certificates || exit 1; \
			if command -v systemctl >/dev/null; then $(SUDO) systemctl disable --now nginx >/dev/null 2>&1 || true; fi; \
		else \
			echo "nginx and wrk are needed for the benchmark: install them"; exit 1; \
		fi; \
	fi
endef

.PHONY: run test lint demo sandbox clean bytecode prometheus-tools postgresql-tools dashboards dashboard-pictures bench bench-tools

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	$(call make_venv,$(VENV))
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

$(VENV)/.installed-docs: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,docs]'
	@touch $@

$(SDK2_VENV)/.installed: constraints-sdk2.txt
	$(call make_venv,$(SDK2_VENV))
	$(SDK2_VENV)/bin/pip install --quiet -c constraints-sdk2.txt openai
	@touch $@

$(BENCH_VENV)/.installed: bench/litellm/requirements.txt bench/litellm/constraints.txt
	$(call make_venv,$(BENCH_VENV))
	$(BENCH_VENV)/bin/pip install --quiet -c bench/litellm/constraints.txt -r bench/litellm/requirements.txt
	@touch $@

# The project's modules byte-compiled ahead (a no-op for those already compiled): where
# PYTHONDONTWRITEBYTECODE is set, every relay worker and every relayctl would otherwise compile
# them again as it starts, a tenth of a second of CPU each (the tests start over a thousand).
# Where the folders cannot be written, everything still runs, compiling at each start.
bytecode: $(VENV)/.installed-run
	@$(BIN)/python -m compileall -q relay ops bench >/dev/null \
		|| echo "Could not byte-compile relay/, ops/ and bench/ (read-only?): each start compiles them instead"

run: $(VENV)/.installed-run bytecode
	$(BIN)/uvicorn relay.app:app --host $(HOST) --port $(PORT) --workers $(WORKERS) --loop uvloop --http httptools --no-access-log \
		--log-config relay/uvicorn-logging.json --timeout-graceful-shutdown $(RELAY_SHUTDOWN_TIMEOUT_SECONDS)

prometheus-tools:
	$(call ensure_prometheus)

postgresql-tools:
	$(call ensure_postgresql)

# The docs extra brings matplotlib, which the benchmark's smoke test draws its chart with.
# Two test processes (pytest-xdist), a file each at a time: the suite's servers and clusters are
# per file or per process, and two processes fill 2 cores.
test: lint $(VENV)/.installed-docs $(SDK2_VENV)/.installed prometheus-tools postgresql-tools bench-tools bytecode
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The linter and the formatter's check on all the Python, and the strict type checker on relay/,
# ops/ and bench/ (configured in pyproject.toml); a finding fails `make test`. mypy reads
# matplotlib's types (ops/dashboard_pictures.py), hence docs.
lint: $(VENV)/.installed-docs
	$(BIN)/ruff check relay ops tests bench
	$(BIN)/ruff format --check relay ops tests bench
	$(BIN)/mypy relay ops bench

# Regenerate dashboards/*.json from ops/dashboards.py.
dashboards: $(VENV)/.installed-run
	$(BIN)/python -m ops.dashboards

# Regenerate docs/dashboards/*.png: a live Prometheus, a longer workload, matplotlib.
dashboard-pictures: $(VENV)/.installed-docs prometheus-tools
	RELAY_DASHBOARD_PICTURES=docs/dashboards RELAY_LIVE_ROUNDS=10 $(BIN)/python -m pytest tests/test_prometheus_live.py -q

bench-tools:
	$(call ensure_bench_tools)

# The relay (on SQLite, and on a throwaway PostgreSQL) beside direct calls and LiteLLM on loopback;
# writes bench/results/<date>.{json,md,png}.
bench: $(VENV)/.installed-docs $(BENCH_VENV)/.installed bench-tools postgresql-tools bytecode
	$(BIN)/python -m bench.run

demo: $(VENV)/.installed-run bytecode
	PATH="$(CURDIR)/$(BIN):$$PATH" bash docs/demo.sh

sandbox: $(VENV)/.installed-run bytecode
	$(BIN)/relayctl sandbox --host $(HOST) --port 8090

clean:
	rm -rf $(VENV) $(SDK2_VENV) $(BENCH_VENV) .pytest_cache .hypothesis
