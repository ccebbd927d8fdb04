# Sealpost. `make run` serves the embedded default; `make test` runs every check CI runs.
# Tools run from .venv/bin directly: no activation needed.

HOST ?= 127.0.0.1
PORT ?= 8000

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python packages whose code mypy checks without --strict (the Django side).
DJANGO_CODE := manage.py project keys messaging compliance tests/server
# client/ joins the strict check once it holds Python files.
STRICT_CODE := protocol $(if $(wildcard client/*.py),client)

.PHONY: venv js build-js run test test-js lint typecheck vectors bench bench-protocol clean

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

run: venv build-js
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) project.asgi:application

# pytest's exit status 5 (no tests collected) fails the target like any other failure.
test: lint typecheck test-js
	$(BIN)/pytest

# The JavaScript protocol against the same vectors and Wycheproof files, and its types.
test-js: js
	npm run --silent typecheck
	npm test

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
bench: bench-protocol

bench-protocol: venv
	@mkdir -p var/bench
	$(BIN)/python -m bench.protocol_figures --json var/bench/protocol.json

# Leaves var/sealpost.sqlite3 and var/secret_key alone: they are data, not build output.
clean:
	rm -rf $(VENV) var/staticfiles .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './node_modules/*' -prune -exec rm -rf {} +
