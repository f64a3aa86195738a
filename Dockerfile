# The user code image: the reconcile_pipeline code location served over gRPC to a Dagster
# deployment of your own (README "Beyond one machine"). The same image runs every launched run
# (DockerRunLauncher starts a container of it, K8sRunLauncher a pod).
#
# Build it from the repository root, next to YOUR project file:
#
#   reconcile init --base app… --table … --postgres-table …   # writes ./reconcile.yaml
#   docker build -t reconcile-user-code .
#   docker build --build-arg RECONCILE_FILE=clients/acme.yaml -t reconcile-acme .   # another file
#
# The build fails when the file is missing: a production image never falls back to the demo's
# project file. Secrets (the Airtable token, DATABASE_URL, the alert webhook) are never baked in:
# the deployment passes them as environment variables at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The Dagster integrations the run workers load the instance with: dagster-docker for the
# single-host deployment (deploy/dagster-docker.yaml), dagster-k8s for the Helm chart. Same
# release as the dagster-postgres pin in pyproject.toml (dagster 1.13.27 = libraries 0.29.27).
ARG DAGSTER_LIBRARIES_VERSION=0.29.27

# The project as a regular install: runtime dependencies only, no dev extras, no tests.
WORKDIR /tmp/reconcile-src
COPY pyproject.toml setup.cfg README.md ./
COPY reconcile_pipeline ./reconcile_pipeline
RUN pip install . \
        "dagster-docker==${DAGSTER_LIBRARIES_VERSION}" \
        "dagster-k8s==${DAGSTER_LIBRARIES_VERSION}" \
    && rm -rf /tmp/reconcile-src

# An unprivileged user with a fixed numeric id (Kubernetes' runAsNonRoot checks the number).
# DAGSTER_HOME is writable by it: run workers keep their compute logs there.
RUN groupadd --gid 10001 reconcile \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin reconcile \
    && mkdir -p /opt/dagster/app /opt/dagster/dagster_home \
    && chown 10001:10001 /opt/dagster/dagster_home

# Your project file (what is synced: bases, tables, fields; README "The project file").
ARG RECONCILE_FILE=reconcile.yaml
COPY ${RECONCILE_FILE} /opt/dagster/app/reconcile.yaml

# AIRTABLE_ENDPOINT_URL is Airtable's real API: the code location binds the resource's
# endpoint to this variable, and Dagster fails a run whose bound variable is unset, so it is
# set here (not a secret) rather than left to each deployment.
ENV RECONCILE_CONFIG=/opt/dagster/app/reconcile.yaml \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    AIRTABLE_ENDPOINT_URL=https://api.airtable.com

WORKDIR /opt/dagster/app
USER 10001:10001

EXPOSE 4000

# CMD, not ENTRYPOINT: run launchers and the Helm chart replace the command (`dagster api
# execute_run …`, or the chart's own `dagster api grpc` arguments).
CMD ["dagster", "api", "grpc", "-m", "reconcile_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]
