# syntax=docker/dockerfile:1.7
# The shipping consumer (SQS queue shipping).
# Built from the repository root after `make protos` (`python -m tools.deployer` does both):
#   docker build -f deploy/docker/shipping-consumer.Dockerfile -t checkout/shipping-consumer:<tag> .
# Two stages on the same pinned slim image: the build stage makes a virtualenv with the
# project, the generated contracts and their dependencies; the runtime stage copies only that
# virtualenv and runs as an unprivileged user.

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler for dependencies without a wheel for this platform; it stays in this stage.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY gen/python ./gen/python
RUN pip install ./gen/python
COPY deploy/docker/requirements-aws.txt ./
RUN pip install -r requirements-aws.txt
COPY pyproject.toml README.md ./
COPY marketplace_platform ./marketplace_platform
COPY services ./services
COPY gateway ./gateway
COPY workers ./workers
COPY local_supervisor ./local_supervisor
COPY saga_tasks ./saga_tasks
COPY simulators ./simulators
RUN pip install .

FROM python:3.12.8-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY deploy/docker/entrypoint.py deploy/docker/healthcheck.py ./deploy/docker/
COPY deploy/ecs/event_rules.json ./deploy/ecs/
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/docker/healthcheck.py", "worker"]
ENTRYPOINT ["python", "/app/deploy/docker/entrypoint.py"]
CMD ["python", "-m", "workers.consumers.shipping"]
