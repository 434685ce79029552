# xaikit: `make demo` (set up and run the main job) and `make test` (run the tests). See README.md.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xaikit-installed
export XAIKIT_ASSETS ?= $(abspath ../shared/assets)
export MPLBACKEND ?= Agg
# pip prints one warning per package for the machine's extra local indexes; hide those lines only.
PIPQ := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo experiments test test-all docs export clean-venv

# Setup is idempotent: it reinstalls only when requirements.txt or pyproject.toml changed since the last install.
setup: $(STAMP)
# Peers (Captum, pytorch-grad-cam) are test-only: requirements-peers.txt.
PEERS_NODEPS := grad-cam==1.5.7
$(STAMP): requirements.txt requirements-peers.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@h=$$(cat requirements.txt requirements-peers.txt pyproject.toml | sha256sum | cut -c1-16); \
	if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" = "$$h" ]; then touch $(STAMP); exit 0; fi; \
	echo "Installing pinned requirements into $(VENV) (first time: a few minutes)"; \
	set -o pipefail; \
	$(BIN)/python -m pip install -q -r requirements.txt $(PIPQ) && \
	$(BIN)/python -m pip install -q -r requirements-peers.txt $(PIPQ) && \
	$(BIN)/python -m pip install -q --no-deps $(PEERS_NODEPS) $(PIPQ) && \
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . $(PIPQ) && \
	echo "$$h" > $(STAMP)

# The main job: papermill runs the quickstart experiment notebook; results land in out/.
demo: setup
	@mkdir -p out
	$(BIN)/papermill -k python3 nbs/experiments/quickstart.ipynb out/quickstart.ipynb -p output_dir $(CURDIR)/out --cwd nbs/experiments --progress-bar
	@echo "Wrote out/quickstart.ipynb and out/quickstart.png"

# The experiment notebooks of nbs/experiments/ (the quickstart is `make demo`), each with its default parameters (small subsets,
# minutes on a CPU), into out/experiments/: executed notebooks, SQLite stores, tables and figures. Full runs: see README.md.
experiments: setup
	@mkdir -p out/experiments
	@set -e; for nb in nbs/experiments/*.ipynb; do n=$$(basename $$nb .ipynb); [ "$$n" = quickstart ] && continue; \
	  echo "papermill $$nb -> out/experiments/$$n.ipynb"; \
	  $(BIN)/papermill -k python3 $$nb out/experiments/$$n.ipynb -p output_dir $(CURDIR)/out/experiments --cwd nbs/experiments; \
	done

# The tests: notebooks and module in sync, then pytest over notebooks and tests/ (XAIKIT_TEST_FLAGS="slow cuda" runs flagged cells too).
test: setup
	@$(BIN)/python scripts/check_export.py
	$(BIN)/python -m pytest tests

docs: setup
	$(BIN)/python scripts/build_docs.py

export: setup
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export

clean-venv:
	rm -rf $(VENV)
