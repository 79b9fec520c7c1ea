# Two commands do everything on a fresh machine (Python 3.11, pip, gcc, git):
#   make run    install, build the examples and serve them on http://127.0.0.1:8787/
#   make test   install and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the C module (edgefn/runtime/_native.c) is built by the install: a change to it re-installs. `run` installs
# edgefn with its guest toolchains (edgefn[all]); `test` adds the test tools (edgefn[test])
INPUTS := $(shell cat pyproject.toml setup.py edgefn/runtime/_native.c guest-sdk/js/toolchain/package-lock.json | cksum | cut -d' ' -f1)
STAMP_RUN  := $(VENV)/.installed-run-$(INPUTS)
STAMP      := $(VENV)/.installed-test-$(INPUTS)
# built guests and toolchain outputs go to edgefn's one cache (~/.cache/edgefn, or $EDGEFN_CACHE_DIR), shared with
# `edgefn serve` / `edgefn dev` however they are started; the tests keep theirs in .cache (tests/conftest.py)

.PHONY: install debs run test bench clean

# edgefn's own bytecode, written even where PYTHONDONTWRITEBYTECODE is set: an editable install has none, so
# every server start compiled ~110 modules from source (~130 ms of a ~400 ms start); only changed files recompile
BYTECODE := $(BIN)/python -m compileall -q -j 0 edgefn

install: $(STAMP)

$(STAMP_RUN): pyproject.toml setup.py edgefn/runtime/_native.c guest-sdk/js/toolchain/package-lock.json
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m ziglang version >/dev/null
	@# the JS/TS toolchain (esbuild, componentize-qjs) from npm, pinned by guest-sdk/js/toolchain/package-lock.json
	@if command -v npm >/dev/null; then $(BIN)/python -m edgefn.build.js; \
	  else echo "npm not found: JavaScript and TypeScript functions need Node.js and npm (https://nodejs.org/)"; fi
	rm -f $(VENV)/.installed-run-*
	touch $@

$(STAMP): $(STAMP_RUN)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-test-*
	touch $@

# the examples' auth hooks read the secret AUTH_TOKEN: the demo token let-me-in is put once (sealed, never in the manifest)
run: $(STAMP_RUN)
	@$(BYTECODE)
	@for fn in auth py-auth; do printf 'let-me-in\n' | $(BIN)/edgefn secret put $$fn AUTH_TOKEN --if-missing --config examples/edgefn.toml; done
	$(BIN)/edgefn serve --config examples/edgefn.toml

# Debian packages the tests use: wrk (edgefn bench's load generator) and chromium (its HTML page, rendered)
DEBS := wrk chromium
debs:
	@missing=""; for p in $(DEBS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    echo "installing$$missing (Debian packages the tests use)"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi

# the gates first (lint + import order, strict types, the floors contract), then the suite
test: install debs
	@$(BYTECODE)
	$(BIN)/ruff check edgefn tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# bench: the bench extra (baselines, profilers, plots) once per pyproject.toml change, and the Debian packages (debs)
bench: install debs
	@stamp=$(VENV)/.bench-$$(cksum < pyproject.toml | cut -d' ' -f1); \
	  test -f $$stamp || { $(BIN)/python -m pip install --quiet -e '.[test,bench]' && rm -f $(VENV)/.bench-* && touch $$stamp; }
	@$(BYTECODE)
	$(BIN)/python bench/run.py

clean:
	rm -rf .cache examples/.edgefn examples/*/.edgefn
