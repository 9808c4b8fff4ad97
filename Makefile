# pyiii: the two commands a user needs are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench soak example install compat redis clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP) redis
	$(PY) benchmarks/run.py

example: $(STAMP) compat
	$(PY) examples/run.py

clean:
	rm -rf $(VENV) .compat data .pytest_cache .mypy_cache .ruff_cache
