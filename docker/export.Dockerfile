# The export stage: trains a CNN with PyTorch and writes an ONNX artifact (docs/artifact.md)
# into /models, the `models` volume in docker-compose.yml.
#
#   docker build -f docker/export.Dockerfile -t convscope-export .
#   docker run --rm -v convscope_models:/models convscope-export            # tinyvgg, fashion-mnist
#   docker run --rm -v convscope_models:/models convscope-export --epochs 5 # extra CLI arguments
#   docker run --rm -v convscope_models:/models -v $PWD:/in:ro convscope-export \
#       python -m model_export import /in/model.onnx --name mine --out /models
#
# Build arguments:
#   BASE_IMAGE       any Debian/Ubuntu-like image; Python 3.11+ is installed with apt when
#                    the base has none (a plain debian:bookworm works).
#   TORCH_INDEX_URL  where torch/torchvision come from. The default, PyTorch's CPU index,
#                    keeps the image small (PyPI's Linux torch is the CUDA build, gigabytes).
#                    Empty: install them offline, from docker/wheels/ only.
#   docker/wheels/   optional local wheels (see docker/wheels/README.md), always offered to
#                    pip with --find-links; nothing in it is kept in the image.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- Python, a venv and the data -------------------------------------------------------------
FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The Fashion-MNIST idx files (Debian's dataset-fashion-mnist, under
# /usr/share/datasets/fashion-mnist): the image never downloads data at run time.
# Python only when the base lacks it (python:* images have it).
RUN set -eux; \
    pkgs="dataset-fashion-mnist"; \
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then \
        pkgs="$pkgs python3 python3-venv ca-certificates"; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'; \
    python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# ---- The requirement lists, read from pyproject.toml ------------------------------------------
# A stage of their own: the layers below are keyed on these lists' contents, so an edit to
# pyproject.toml that leaves the pins alone does not reinstall torch.
FROM python AS requirements
COPY pyproject.toml docker/pyproject-deps.py /src/
RUN python /src/pyproject-deps.py --pyproject /src/pyproject.toml export --only torch,torchvision > /torch.txt \
    && python /src/pyproject-deps.py --pyproject /src/pyproject.toml export --exclude torch,torchvision > /requirements.txt

# ---- The image -------------------------------------------------------------------------------
FROM python

# An unprivileged user owns /models, so a new named volume mounted there is writable by it.
RUN set -eu; \
    if command -v useradd >/dev/null 2>&1; then \
        groupadd --gid 10001 convscope; \
        useradd --uid 10001 --gid 10001 --create-home --home-dir /home/convscope --shell /usr/sbin/nologin convscope; \
    else \
        echo 'convscope:x:10001:10001::/home/convscope:/sbin/nologin' >> /etc/passwd; \
        echo 'convscope:x:10001:' >> /etc/group; \
        mkdir -p /home/convscope; chown 10001:10001 /home/convscope; \
    fi; \
    mkdir -p /models; chown 10001:10001 /models

# torch and torchvision first, at the exact versions pyproject.toml pins, from
# TORCH_INDEX_URL (or, when it is empty, from docker/wheels/ alone).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=requirements /torch.txt /tmp/torch.txt
RUN --mount=type=bind,source=docker/wheels,target=/tmp/wheels \
    set -eu; \
    if [ -n "$TORCH_INDEX_URL" ]; then src="--index-url $TORCH_INDEX_URL"; else src="--no-index"; fi; \
    pip install $src --find-links /tmp/wheels -r /tmp/torch.txt

# The rest of the export stage's dependencies (PyPI), still before any code.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# The code last: editing it rebuilds from here on only.
COPY pyproject.toml /src/
COPY artifact/ /src/artifact/
COPY model_export/ /src/model_export/
COPY service/ /src/service/
RUN pip install --no-deps /src \
    && rm -rf /src/build /src/*.egg-info \
    && python -c "import model_export, torch; print('torch', torch.__version__)"
COPY docker/export-entrypoint.sh /usr/local/bin/convscope-export-entrypoint

USER 10001:10001
ENV HOME=/home/convscope
WORKDIR /home/convscope

# What to train when no arguments are given (docker/export-entrypoint.sh reads them).
ENV CONVSCOPE_EXPORT_ARCH=tinyvgg \
    CONVSCOPE_EXPORT_DATASET=fashion-mnist \
    CONVSCOPE_EXPORT_EPOCHS=3 \
    CONVSCOPE_EXPORT_OUT=/models \
    CONVSCOPE_EXPORT_IF_MISSING=1
ENTRYPOINT ["/bin/sh", "/usr/local/bin/convscope-export-entrypoint"]
CMD []
