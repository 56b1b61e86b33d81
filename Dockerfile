# syntax=docker/dockerfile:1
# Handwriting OCR service. Build:  docker build -t ocr-service .
# Run:    docker run --rm -p 8000:8000 ocr-service     (then open http://127.0.0.1:8000)
# BASE may name any Debian-based image with python3.11, pip and `python` on PATH (the tests
# build one from Debian packages, as these machines cannot pull from a registry).
ARG BASE=python:3.11.11-slim-bookworm

# --- builder: wheels for the package (from this pyproject.toml) and all its dependencies
FROM ${BASE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ocr_service/ ./ocr_service/
COPY models/default.npz models/default.json ./models/
RUN pip wheel --wheel-dir /wheels .

# --- final: the runtime only (no compilers, no build tree), as an unprivileged user
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OCR_HOST=0.0.0.0 \
    OCR_PORT=8000 \
    OCR_MODEL_PATH=/models/default
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent ocr
# The wheels are bind-mounted from the builder, so they never land in a layer. The
# dependencies' own test suites are never run in the image: they go too.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels ocr-service \
    && find /usr/local/lib -depth -type d -name tests -path '*-packages/*' -exec rm -rf {} +
COPY --chown=ocr:ocr models/ /models/
VOLUME ["/models"]
USER ocr
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OCR_PORT', '8000'), timeout=3)"]
CMD ["ocr-serve"]
