# thirdring: `make run` starts everything on the embedded defaults; `make test` runs the suite.
# Both set themselves up from nothing: virtual environment, install, model, database.

VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast lint format bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; anything looser pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(STAMP)
	$(BIN)/thirdring model prepare

run: setup
	$(BIN)/thirdring up

# The whole suite, slow end-to-end tests included, on SQLite and PostgreSQL.
test: setup
	scripts/browser-up.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Unbuffered, so a CI log shows how far the suite got even if it is cut off.
	THIRDRING_TEST_POSTGRES_URL="$${THIRDRING_TEST_POSTGRES_URL:-$$(scripts/postgres-up.sh)}" \
		PYTHONUNBUFFERED=1 $(BIN)/pytest -ra --durations=15

# Without the slow end-to-end tests.
test-fast: setup
	$(BIN)/pytest -ra -m "not slow"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(PY) -m bench.pipeline

clean:
	rm -rf $(VENV) var
