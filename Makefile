# Sealpost. `make run` serves the embedded default; `make test` runs every check CI runs.
# Tools run from .venv/bin directly: no activation needed.

HOST ?= 127.0.0.1
PORT ?= 8000

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python packages whose code mypy checks without --strict (the Django side).
DJANGO_CODE := manage.py project keys messaging groups attachments compliance web tests/server tests/e2e tests/harness tests/web \
	tests/browser/qr_matches.py harness bench
# client/ joins the strict check once it holds Python files.
STRICT_CODE := protocol $(if $(wildcard client/*.py),client)

.PHONY: venv js build-js browser collectstatic run test test-python test-scale test-js test-browser lint \
	typecheck \
	vectors bench bench-protocol bench-relay bench-scale bench-web bench-network clean

venv: $(STAMP)

# Reinstalls only when a requirements file changes. find-python prints the interpreter
# or explains on stderr why there is none; the recipe then stops.
$(STAMP): requirements.txt requirements-dev.txt
	@if [ ! -x $(BIN)/python ]; then \
		python=$$(scripts/find-python) || exit 1; \
		echo "creating $(VENV) with $$python"; \
		"$$python" -m venv $(VENV) || exit 1; \
	fi
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# The reference client's `sealpost` command (and the protocol package), editable.
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The browser's JavaScript: packages from package-lock.json (npm ci), reinstalled only
# when the lock file changes; the bundle is built, never committed.
JS_STAMP := node_modules/.installed

js: $(JS_STAMP)

$(JS_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm (Node.js 20+) is needed for the web client" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

build-js: js
	npm run --silent build
	npm run --silent size

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a
# browser of its own). Installed with apt when missing, which needs root, as CI has.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "error: $(CHROMIUM) is missing and only root can install it: run" \
			"'apt-get install chromium' as root, then make again" >&2; exit 1; \
	fi; \
	echo "installing Chromium with apt"; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends chromium

# The hashed, compressed (gzip and Brotli) static files WhiteNoise serves with DEBUG off.
collectstatic: venv build-js
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

run: venv collectstatic
	$(BIN)/python manage.py migrate --noinput
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) project.asgi:application

# In this order: the browser tests come last, after the Python tests (on the embedded
# default, then on PostgreSQL + Redis).
test: lint typecheck test-js test-python test-scale test-browser

# pytest's exit status 5 (no tests collected) fails the target like any other failure.
test-python: venv
	$(BIN)/pytest

# The Python suite again on the scale-out configuration: PostgreSQL (DATABASE_URL) and the
# Redis channel layer (REDIS_URL). pytest-django makes its test database there; each live
# Daphne server of the e2e tests gets a fresh database and a Redis key prefix of its own
# (harness/live_server.py). tests/e2e/test_scale_out.py runs two Daphne processes on
# PostgreSQL + Redis in both runs.
SCALE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
SCALE_REDIS_URL ?= redis://127.0.0.1:6379/0
# What touches a database or a channel layer runs again: tests/protocol (sans-I/O by an
# import contract) and tests/client (in-memory fakes) cannot tell the difference, and the
# weak-network test measures the client across the proxy, so they run once, above.
SCALE_TESTS := tests/server tests/compliance tests/web tests/harness tests/e2e \
	--deselect tests/e2e/test_weak_network.py
test-scale: venv
	DATABASE_URL=$(SCALE_DATABASE_URL) REDIS_URL=$(SCALE_REDIS_URL) $(BIN)/pytest $(SCALE_TESTS)

# The JavaScript protocol against the same vectors and Wycheproof files, and its types.
test-js: js
	npm run --silent typecheck
	npm test

# The web client in Chromium against real Daphne servers (tests/browser; screenshots go to
# artifacts/screenshots/).
test-browser: venv collectstatic browser
	npm run --silent test:browser

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy --strict $(STRICT_CODE)
	$(BIN)/mypy $(DJANGO_CODE)

vectors: venv
	$(BIN)/python scripts/make_vectors.py

# Figures, not pass/fail: printed as a table (and JSON under var/bench/).
bench: bench-protocol bench-relay bench-web bench-network

bench-protocol: venv
	@mkdir -p var/bench
	$(BIN)/python -m bench.protocol_figures --json var/bench/protocol.json

# The relay under load (bench/relay_bench.py): a real Daphne on the embedded default
# (SQLite, in-memory channel layer), 1/20/100 sender-receiver pairs, 2,000 idle
# connections, prekey claims. About 3 minutes; BENCH_ARGS=--quick for about one.
bench-relay: venv
	@mkdir -p var/bench
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python -m bench.relay_bench \
		--json var/bench/relay.json $(BENCH_ARGS)

# The same on PostgreSQL and Redis, both running locally. The bench drops and creates
# the database named here (its name must contain "bench"); Redis database 15 is used.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sealpost_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/15

bench-scale: bench-protocol
	DATABASE_URL=$(BENCH_DATABASE_URL) REDIS_URL=$(BENCH_REDIS_URL) \
		$(BIN)/python -m bench.relay_bench --json var/bench/relay-scale.json $(BENCH_ARGS)

# Message delivery over weak networks (bench/network_bench.py): for 2g, 3g and
# intercontinental (harness/netem.py), the time of a first message (new session) and of a
# 10-message burst, median of 3 rounds. About 3 minutes.
bench-network: venv
	@mkdir -p var/bench
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python -m bench.network_bench \
		--json var/bench/network.json $(BENCH_ARGS)

# The web client over a 2G-like link (harness/netem.py: 50 kbit/s and 300 ms each way):
# gzipped JavaScript, time to a usable chat page and to a first message sent.
bench-web: venv collectstatic browser
	@mkdir -p var/bench
	node bench/web_2g.mjs --json var/bench/web_2g.json

# Leaves var/sealpost.sqlite3 and var/secret_key alone: they are data, not build output.
clean:
	rm -rf $(VENV) var/staticfiles .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './node_modules/*' -prune -exec rm -rf {} +
