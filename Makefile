# pyiii: the two commands a user needs are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench soak example install compat redis wrk clean profile

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the engine on ws://127.0.0.1:49134 with ./iii-config.yaml (Ctrl-C stops it).
run: $(STAMP)
	$(VENV)/bin/pyiii serve --config iii-config.yaml

## Install everything the tests need, then run the whole suite.
test: $(STAMP) redis compat
	$(PY) -m pytest -q

redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }

compat:
	bash scripts/install-compat.sh

# wrk drives the http benchmark section (Debian package).
wrk:
	@command -v wrk >/dev/null || { \
	  echo "installing wrk (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null; }

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/mypy

## Benchmarks: one table of ratios against baselines measured in the same run (< 5 min).
bench: $(STAMP) redis wrk
	bash scripts/install-compat.sh node-0.22 bench-arq
	$(PY) benchmarks/run.py

## The long soak: 500 workers for 60 s against one engine (a 10 s twin runs in `make test`).
soak: $(STAMP)
	$(PY) scripts/soak.py --seconds 60 --workers 500

## Profile the engine under the 64-in-flight state::get row (py-spy).
profile: $(STAMP)
	$(PY) benchmarks/profile.py

## Run the State guide's flows (TypeScript as written, latest SDK, Python) against an engine.
example: $(STAMP) compat
	$(PY) examples/run.py

clean:
	rm -rf $(VENV) .compat data .pytest_cache .mypy_cache .ruff_cache
