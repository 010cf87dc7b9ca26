# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: venv demo test lint bench-ingest bench-preprocess bench-colorize clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: venv
	$(BIN)/python -m cli.demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# img2dataset (the peer) goes in its own environment so that the project's stays as tested;
# img2dataset lives in its own environment: its pins conflict with the project's today.
bench-ingest: venv
	test -x .venv-bench/bin/img2dataset || ($(PY) -m venv .venv-bench && \
		.venv-bench/bin/python -m pip install -q img2dataset==1.47.0)
	$(BIN)/python bench/ingest.py

bench-preprocess: venv
	$(BIN)/python bench/preprocess.py

bench-colorize: venv
	$(BIN)/python bench/colorize.py
	$(BIN)/python bench/colorize_cluster.py

clean:
	rm -rf $(VENV) demo-output .koala
