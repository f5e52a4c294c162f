# The front door: `make help` lists the commands. Settings come from the environment (docs/operations.md).
# Process commands live in the Procfile; tool settings in pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The Celery peer's own environment for make bench: celery is never the project's dependency.
BENCH_VENV := .bench-venv
# Parallel test processes: most tests wait on servers and workers, so 4 keep this 2-core machine busy.
TEST_PROCESSES ?= 4
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed ## create the virtualenv with the pinned requirements

run: venv ## the whole system on this machine: Redis (if none answers), workers, web app; HA=1: a Sentinel group for Redis
	$(PY) -m scripts.run $(if $(HA),--ha)

demo: venv ## `make run` with synthetic prices (no network needed); SOURCE=simulated-yahoo: yfinance against a local simulated Yahoo
	$(if $(filter simulated-yahoo,$(SOURCE)),$(PY) -m scripts.run --simulated-yahoo,PRICE_SOURCE=synthetic $(PY) -m scripts.run)

web: venv ## only the web app (gunicorn) on HOST:PORT
	$(PY) -m scripts.procfile web

worker: venv ## WORKERS worker processes (default: one per core) against REDIS_URL
	$(PY) -m scripts.procfile worker

redis: venv ## only the Redis server for REDIS_URL's port, persistent in REDIS_DATA_DIR
	$(PY) -m scripts.procfile redis

sentinel: venv ## a Redis Sentinel on SENTINEL_PORT watching SENTINEL_MONITOR (docs/operations.md "Redis Sentinel")
	$(PY) -m scripts.sentinel

test-system: ## Debian packages the tests use: headless Chromium, and a TLS-capable redis-server (apt, as root)
	@command -v chromium >/dev/null && command -v redis-server >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium redis-server; }

test: $(VENV)/.installed-test test-system ## the whole test suite (starts its own Redis, workers, web app, browser)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.installed-test ## ruff: style, imports, complexity, types and docstrings (pyproject.toml)
	$(VENV)/bin/ruff check .

$(BENCH_VENV)/.installed: bench/requirements-peer.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements-peer.txt
	touch $@

bench: $(VENV)/.installed-test $(BENCH_VENV)/.installed ## benchmark against the Celery peer (../shared) in one run; SAVE=1 writes bench/results.md
	BENCH_PEER_PYTHON=$(BENCH_VENV)/bin/python $(PY) -m bench.bench $(if $(SAVE),--save)

soak: $(VENV)/.installed-test ## the fleet against a simulated Yahoo that bans: 500 symbols, 2 egresses x 10 workers (~4 min); SAVE=1 keeps it
	$(PY) -m bench.soak $(if $(SAVE),--save)

evaluate: venv ## forecast errors of each method over a folder of CSVs: make evaluate DATA=../shared/data/prices
	$(PY) -m scripts.evaluate $(or $(DATA),../shared/data/prices)

loadtest: $(VENV)/.installed-test ## Locust against a running system at URL (docs/performance.md "Load"); USERS, SPAWN, TIME; FLOOD=1: one client floods, another's latency is measured
	$(VENV)/bin/locust -f bench/locustfile.py --headless --host $(or $(URL),http://127.0.0.1:5000) \
		$(if $(FLOOD),-u 2 -r 2 -t $(or $(TIME),60s) FloodingClient InteractiveClient,-u $(or $(USERS),50) -r $(or $(SPAWN),10) -t $(or $(TIME),60s) PageUser ScriptUser) --only-summary

clean: ## remove the virtualenv, caches and local Redis data
	rm -rf $(VENV) $(BENCH_VENV) .cache .data .pytest_cache .hypothesis *.egg-info

.PHONY: help venv run demo web worker redis test-system test lint bench soak evaluate loadtest clean
