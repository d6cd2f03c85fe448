# One image for every command of the product: the operator Deployment runs
# `f1backfill operator`, the embedding Jobs `f1backfill worker` (the operator's WORKER_COMMAND),
# the chart's hooks `f1backfill migrate`. A Kubernetes `command` replaces the ENTRYPOINT, so
# both styles work. It is the default (last) target:
#
#   docker build -t f1backfill:dev .          (or: make image)
#   docker run --rm f1backfill:dev --help
#
# A second target, `demo`, is that image plus the development sandbox (operator/f1sandbox);
# only the chart's demo seed hook (`f1sandbox seed`, values `demo.image`) runs it:
#
#   docker build --target demo -t f1backfill-demo:dev .     (or: make demo-image)
#
# Not in the product image: the sandbox (its API emulator, the demo, the throwaway database,
# the demo data), the sample manifests and the test tooling of the `dev` extra. Both images
# share one base stage, so they differ only by the venv and the entry point.
#
# The base is pinned by tag, the same one in every stage (the venv's interpreter symlinks
# point into it). 3.11 is the version the test suite runs on; pin a digest
# (python:3.11-slim-bookworm@sha256:...) where builds must be byte-for-byte repeatable.

# ---- builder: the package and its runtime dependencies, installed into /opt/venv -------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# The runtime dependencies alone first: pyproject's [project.dependencies], never the `dev` or
# `local` extras. This layer is rebuilt only when pyproject.toml changes, not on every code
# edit. Every dependency ships manylinux wheels (psycopg2-binary, numpy), so no compiler is
# needed here either.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# Then the package itself (a wheel built by hatchling in pip's isolated build environment,
# installed without touching the dependencies above). README.md is part of the package
# metadata. pip compiles the .pyc files here, so nothing is compiled (or written) at run time
# on a read-only root filesystem. Last, the installers leave the venv (3.11's venv seeds pip
# and setuptools; the product needs neither), and the entry point is smoke-tested.
COPY README.md ./
COPY operator/f1backfill/ ./operator/f1backfill/
RUN pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes pip setuptools \
    && f1backfill --help > /dev/null

# ---- demo-builder: the product's venv plus the sandbox, for the `demo` target only -----------
# The product's pip left the venv above; the base image's pip installs into it (--python).
# f1sandbox's dependency on f1-backfill is met by the product already installed there.
FROM builder AS demo-builder

COPY operator/f1sandbox/ ./operator/f1sandbox/
RUN pip --python /opt/venv/bin/python install --no-cache-dir ./operator/f1sandbox \
    && f1sandbox --help > /dev/null

# ---- base: what both images share (user, environment, labels), no venv yet --------------------
FROM python:3.11-slim-bookworm AS base

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="f1backfill" \
      org.opencontainers.image.description="F1 Cortex backfill: kopf operator and embedding worker for a fleet of yachts (one image, many commands)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="F1 Cortex" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster (the .pyc files
# were compiled at build time); PYTHONUNBUFFERED: logs reach `kubectl logs` as they happen.
# HOME=/tmp: the one writable place in the operator's pod (an emptyDir in the chart),
# should a library want a home; the worker Jobs write nothing at all.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp

# A real passwd entry for uid 10001 (the chart's runAsUser): libpq (for a URL without a
# user name) and getpass look the current user up, and fail on a uid the image does not know.
RUN groupadd --system --gid 10001 f1backfill \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin f1backfill

# Owned by root and read-only for the service user: nothing here is written at run time.
WORKDIR /app
COPY crds/ /app/crds/

# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001

# ---- demo: the chart's seed hook (`f1sandbox seed`, the sample yachts' rows) ------------------
# The sandbox reads its CRDs and samples as package data: nothing more to copy.
FROM base AS demo

LABEL org.opencontainers.image.title="f1backfill-demo" \
      org.opencontainers.image.description="F1 Cortex backfill with its development sandbox: demo data for kind and demos, never for production"

COPY --from=demo-builder /opt/venv /opt/venv

ENTRYPOINT ["f1sandbox"]
CMD ["--help"]

# ---- runtime: the product's venv, nothing else (the default target) ---------------------------
FROM base AS runtime

COPY --from=builder /opt/venv /opt/venv

# 8080: the worker's /health and /metrics (PROMETHEUS_PORT) and the operator's /healthz
# (OPERATOR_HEALTH_PORT); 9090: the operator's /metrics (OPERATOR_METRICS_PORT).
EXPOSE 8080 9090

# No HEALTHCHECK: Kubernetes ignores it. The probes live where they differ per command: the
# operator's liveness (/healthz) in the chart's Deployment, the worker's (/health) in the Job
# the operator builds; migrate (and the demo image's seed) are run-to-completion Jobs that
# need none.
# No init process either: the worker and the operator handle SIGTERM themselves (the worker
# releases its claimed rows and exits 143) and start no child processes.
ENTRYPOINT ["f1backfill"]
CMD ["--help"]
