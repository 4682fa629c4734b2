# Hubwarden: a Hugging Face Hub mirror that quarantines, verifies and scans every file.
#   docker build -t hubwarden .
#   docker run -p 8080:8080 -v hubwarden-data:/data hubwarden
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUBWARDEN_HOST=0.0.0.0 \
    HUBWARDEN_PORT=8080 \
    HUBWARDEN_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY scanners ./scanners
COPY migrations ./migrations
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin hubwarden \
    && mkdir -p /data \
    && chown hubwarden:hubwarden /data

USER hubwarden
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUBWARDEN_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["hubwarden"]
CMD ["serve"]
