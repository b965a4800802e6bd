# syntax=docker/dockerfile:1
# One image for every service: the command selects it (repotalk gateway | repotalk worker <service> | ...).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
COPY repotalk ./repotalk
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install --only-binary=:all: ripgrep==14.1.0 \
    && /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    REPOTALK_DATA_DIR=/var/lib/repotalk HOST=0.0.0.0 PORT=8000
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/repotalk --create-home repotalk
COPY --from=build /opt/venv /opt/venv
USER 10001
WORKDIR /var/lib/repotalk
EXPOSE 8000
CMD ["repotalk", "gateway"]
