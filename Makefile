# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Segment's JavaScript SDKs for tests/sdk, at the versions of the committed lock.
NODE_SDK := tests/sdk/node
NODE_STAMP := $(NODE_SDK)/node_modules/.installed-stamp
# GraphiQL and React for the gateway's dev-mode page, served locally (works offline).
GRAPHIQL := gateway/graphiql
GRAPHIQL_STAMP := $(GRAPHIQL)/node_modules/.installed-stamp

.PHONY: run test lint unit bench protos lock clean sdk-deps chromium graphiql-deps test-resilience soak

run: $(STAMP) graphiql-deps
	$(BIN)/python -m infra.local

test: $(STAMP) sdk-deps graphiql-deps lint
	$(BIN)/python -m pytest -q -m "not resilience_slow"

# Ten minutes at 300 events/s and 20 GraphQL reads/s: memory, consumer lag, freshness.
soak: $(STAMP)
	$(BIN)/python tests/perf/soak.py

# The resilience suite in full (crash faults, ...), then its table.
test-resilience: $(STAMP)
	rm -f .resilience/*.jsonl
	$(BIN)/python -m pytest -q tests/resilience; status=$$?; \
	$(BIN)/python -m tests.resilience.report; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services gateway infra tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python tests/perf/bench_doors.py --baseline b27a9a2
	$(BIN)/python tests/perf/bench_ingest.py
	$(BIN)/python tests/perf/bench_identity.py
	$(BIN)/python tests/perf/bench_profile.py --store-ab 1
	$(BIN)/python tests/perf/bench_profile_history.py
	$(BIN)/python tests/perf/bench_segmentation.py
	$(BIN)/python tests/perf/bench_recommendation.py
	$(BIN)/python tests/perf/bench_wallet.py
	$(BIN)/python tests/perf/bench_event_loop.py
	$(BIN)/python tests/perf/bench_bus_wait.py
	$(BIN)/python tests/perf/bench_gateway.py --clients 1,10,50
	$(BIN)/python tests/perf/bench_demo.py

protos: $(STAMP)
	$(BIN)/python -m infra.protogen

# Re-pin every dependency (runtime, local servers, dev tools) into constraints.txt.
lock:
	rm -rf .local/lock-venv
	$(PYTHON) -m venv .local/lock-venv
	.local/lock-venv/bin/pip install -q ".[local,dev]"
	.local/lock-venv/bin/pip freeze --exclude-editable | grep -v '^lodestar-cdp' > constraints.txt
	rm -rf .local/lock-venv

# Created when missing, re-run when the project or the pins change.
$(STAMP): pyproject.toml constraints.txt data-requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[local,dev]"
	$(BIN)/python -m pip install -q --no-deps -r data-requirements.txt
	touch $(STAMP)

# What the SDK compatibility tests (tests/sdk) need besides the virtualenv.
sdk-deps: $(NODE_STAMP) chromium

# Created when missing, re-installed exactly from the lock when it or package.json changes.
$(NODE_STAMP): $(NODE_SDK)/package.json $(NODE_SDK)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or later" >&2; exit 1; }
	cd $(NODE_SDK) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

graphiql-deps: $(GRAPHIQL_STAMP)

# Installed exactly from the committed lock when missing or when it changes.
$(GRAPHIQL_STAMP): $(GRAPHIQL)/package.json $(GRAPHIQL)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or later" >&2; exit 1; }
	cd $(GRAPHIQL) && npm ci --no-audit --no-fund
	touch $(GRAPHIQL_STAMP)

# The headless browser of tests/sdk/test_browser_sdk.py: installed when missing and root;
# otherwise that test fails saying how to install it.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "chromium is missing: run 'sudo apt-get install -y chromium' for the browser test" >&2; fi

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache $(NODE_SDK)/node_modules
	rm -rf $(GRAPHIQL)/node_modules
