# syntax=docker/dockerfile:1
# The chatlens API image:
#   docker build -t chatlens .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql+asyncpg://… chatlens
# Settings come from the environment (see the README); logs are JSON lines on stdout.

# Trixie's postgresql-client (17) can dump the PostgreSQL 17 of deploy/compose.yaml.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# ---- build: a virtualenv with chatlens and its runtime dependencies, exactly as uv.lock pins
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/chatlens \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# The uv of the Makefile (UV_VERSION): the same resolver reads the same lock.
RUN pip install uv==0.13.10
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --extra s3 --no-editable

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
# pg_dump and pg_restore, for `chatlens backup` and `chatlens restore`. The version is the
# base image's: pinning one would break the build at Debian's next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chatlens \
    && useradd --system --uid 10001 --gid chatlens --home-dir /app --no-create-home chatlens \
    && install -d -o chatlens -g chatlens /app /app/backups
COPY --from=build /opt/chatlens /opt/chatlens
COPY scripts/backup_db.sh /usr/local/bin/backup_db.sh
ENV PATH=/opt/chatlens/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHATLENS_HOST=0.0.0.0 \
    CHATLENS_PORT=8000 \
    LOG_FORMAT=json \
    BACKUP_DIR=/app/backups
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('CHATLENS_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["chatlens"]
CMD ["serve"]
