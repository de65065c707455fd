# The HTTP service: onnxruntime + FastAPI, no torch, no compilers, not root.
#
#   docker build -f docker/service.Dockerfile -t convscope-service .
#   docker run --rm -p 127.0.0.1:8000:8000 -v convscope_models:/models:ro convscope-service
#
# The same file makes the CUDA image (docker-compose.yml's `service-gpu`):
#   docker build -f docker/service.Dockerfile -t convscope-service-gpu \
#       --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 \
#       --build-arg CONVSCOPE_EXTRA=gpu .
#
# Build arguments:
#   BASE_IMAGE       any Debian/Ubuntu-like image; Python 3.11+ comes from apt when the
#                    base has none (plain Debian, nvidia/cuda).
#   CONVSCOPE_EXTRA  the pyproject.toml extra to install: `serve` (CPU onnxruntime) or
#                    `gpu` (onnxruntime-gpu). Never both: they install the same module.
# Every setting is a CONVSCOPE_* environment variable read by the service (see
# docs/deploy.md); the image sets only those that differ inside a container.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- Python runtime: all the final image has besides the venv --------------------------
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN set -eux; \
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
        apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---- The requirement list, read from pyproject.toml --------------------------------------
# A stage of its own: the install below is keyed on the list's contents, so an edit to
# pyproject.toml that leaves this extra's dependencies alone reinstalls nothing.
FROM runtime AS requirements
ARG CONVSCOPE_EXTRA=serve
COPY pyproject.toml docker/pyproject-deps.py /src/
RUN python3 /src/pyproject-deps.py --pyproject /src/pyproject.toml "$CONVSCOPE_EXTRA" > /requirements.txt

# ---- Dependencies: rebuilt only when that list changes -------------------------------------
FROM runtime AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN set -eu; \
    pip install -r /tmp/requirements.txt; \
    if python -c 'import torch' 2>/dev/null; then echo "torch must not be in the service image" >&2; exit 1; fi

# ---- The project as a wheel: rebuilt on every code edit, small ---------------------------
FROM deps AS wheel
COPY pyproject.toml /src/
COPY artifact/ /src/artifact/
COPY service/ /src/service/
COPY model_export/ /src/model_export/
RUN pip wheel --no-deps --wheel-dir /wheels /src

# ---- Final image ----------------------------------------------------------------------------
FROM runtime
RUN set -eu; \
    if command -v useradd >/dev/null 2>&1; then \
        groupadd --system --gid 10001 convscope; \
        useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin convscope; \
    else \
        echo 'convscope:x:10001:10001::/nonexistent:/sbin/nologin' >> /etc/passwd; \
        echo 'convscope:x:10001:' >> /etc/group; \
    fi; \
    mkdir -p /models

COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
COPY docker/healthcheck.py /usr/local/bin/convscope-healthcheck
RUN chmod 0755 /usr/local/bin/convscope-healthcheck
ENV CONVSCOPE_HOST=0.0.0.0 \
    CONVSCOPE_PORT=8000 \
    CONVSCOPE_MODEL_REPOSITORY=/models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/convscope-healthcheck"]
CMD ["python", "-m", "service"]
