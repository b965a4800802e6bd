# syntax=docker/dockerfile:1
# One image for every process; the command picks it: `repotalk gateway`, `repotalk worker <service>`,
# `repotalk migrate`. One image is leaner than five: the services share every dependency (tree-sitter
# grammars, tantivy, Celery, SQLAlchemy), so per-service images would only repeat the same layers.

# ---- build: resolve nothing, install the pinned wheels, then the project without its dependencies
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# The lock changes less often than the code: its layer stays cached across code changes.
COPY deploy/docker/requirements.lock ./requirements.lock
# Wheels only: no compiler is needed, so none is installed (FACTS: ripgrep 14.1.0 ships a binary wheel).
RUN /opt/venv/bin/pip install --only-binary=:all: --require-virtualenv -r requirements.lock
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
COPY repotalk ./repotalk
RUN /opt/venv/bin/pip install --no-deps --no-compile . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/pip uninstall -y pip \
    && /opt/venv/bin/repotalk --help > /dev/null

# ---- runtime: the venv, git (code_search clones git remotes), a non-root user, nothing else
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REPOTALK_DATA_DIR=/var/lib/repotalk \
    HOME=/var/lib/repotalk \
    HOST=0.0.0.0 \
    PORT=8000
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives \
    && groupadd --system --gid 10001 repotalk \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/repotalk --create-home \
       --shell /usr/sbin/nologin repotalk
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/repotalk
EXPOSE 8000 8001
# The gateway answers on $PORT; a worker answers on $WORKER_HEALTH_PORT when it is set.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WORKER_HEALTH_PORT') or os.environ.get('PORT', '8000'); urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]
CMD ["repotalk", "gateway"]
