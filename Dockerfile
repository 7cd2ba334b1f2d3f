# Chroma server image: `docker build -t chroma .`, or through docker-compose.yml.
# Every plugin folder is built and installed, so the image serves CHROMA_STORE=sqlite and
# CHROMA_STORE=clickhouse (against a ClickHouse server: the embedded chdb engine is left out
# to keep the image small).

# The base is pinned by exact tag so a rebuild gets the same Python and Debian release.
FROM python:3.11.15-slim-bookworm AS build

# hnswlib ships no wheels and compiles from source. apt versions are left unpinned:
# bookworm's security updates remove the old versions, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY chroma_core chroma_core
COPY chroma_cli chroma_cli
COPY wire wire
COPY client client
COPY plugins plugins
# One resolve for the root package, the wire and client packages and all plugins, so their
# `chroma`, `chroma-wire` and `chroma-client` requirements are met by this source tree rather
# than by unrelated packages of those names on PyPI.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . wire client plugins/*/


FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are bind-mounted rather than copied, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl

RUN groupadd --system --gid 10001 chroma \
    && useradd --system --uid 10001 --gid chroma --no-create-home --home-dir /data chroma \
    && mkdir /data \
    && chown chroma:chroma /data
VOLUME /data
WORKDIR /data
# numeric, so a runtime that checks for a non-root user can verify it without /etc/passwd
USER 10001:10001

# Outside a container the server binds 127.0.0.1; here the published port is the boundary.
ENV CHROMA_HOST=0.0.0.0 \
    CHROMA_PATH=/data
EXPOSE 8000

# slim has no curl or wget; the image's own Python asks /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CHROMA_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]

CMD ["chroma-server"]
