# The product image: the `runbook` CLI, worker and gateway. The local stand-ins (the `local` extra) stay out.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# dependencies first, so code changes do not reinstall them
COPY pyproject.toml README.md ./
COPY core core
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY starters starters
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app runbook

# the catalog is data, read from the working directory (RUNBOOK_CATALOG_DIR)
COPY runbooks runbooks

USER runbook
EXPOSE 8080 9464
CMD ["runbook", "worker"]
