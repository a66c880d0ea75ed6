# syntax=docker/dockerfile:1
# The sagawire sidecar image: `docker build -t sagawire:0.1.0 .` (docs/deployment.md).
#
# Two stages. `build` turns this checkout into wheels (sagawire's and every dependency's),
# with a compiler and pip's cache at hand; `runtime` starts again from a clean slim image
# and installs those wheels offline, so the image holds no build tools, no source tree and
# no pip cache, and a container never runs pip: what was tested is what starts.
# Both stages use the same base tag (bookworm pinned, so a Debian release change is a
# deliberate edit here, not a surprise on the next pull) so the wheels fit the runtime.

FROM python:3.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is made of (.dockerignore keeps the rest of the checkout out too).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY adapters ./adapters
COPY orchestrator ./orchestrator
COPY sagas ./sagas
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.12-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="sagawire" \
      org.opencontainers.image.description="Saga orchestrator and choreography sidecar for Kafka, NATS JetStream and RabbitMQ" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SAGAWIRE_HTTP=0.0.0.0:8080 \
    SAGAWIRE_STORE=sqlite:////var/lib/sagawire/sagawire.db
# The wheels come from the build stage and are installed offline (--no-index): nothing is
# downloaded here, and the wheel directory does not stay in a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels sagawire
# A numeric, non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 sagawire \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sagawire \
       --shell /usr/sbin/nologin sagawire \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sagawire
# The example order saga, so `docker run` alone runs something; mount your own sagas over
# /sagas (a directory of saga modules, or set --sagas to a file or a dotted module).
COPY --chown=root:root --chmod=0644 sagas/order.py /sagas/order.py
USER 10001:10001
# The default SQLite store lives here: mount a volume (or use postgresql://) to keep it.
WORKDIR /var/lib/sagawire
EXPOSE 8080
# Liveness on /healthz, at the port SAGAWIRE_HTTP names (slim has no curl: Python's urllib).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; port = os.environ.get('SAGAWIRE_HTTP', '0.0.0.0:8080').rpartition(':')[2]; u.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# `sagawire run` drains on SIGTERM (finishes in-flight work, flushes the outbox).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sagawire"]
CMD ["run", "--sagas", "/sagas"]
