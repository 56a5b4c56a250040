# syntax=docker/dockerfile:1.7
# One image for every docproc process on Kubernetes: flow runs (Prefect worker Jobs), the Prefect
# server and worker, the Dask scheduler and workers, the pool setup Job and the event receiver.
# Non-root (uid 10001) and read-only-root friendly: everything written goes to /tmp or a volume.
# The OCR (easyocr) and NLP (spaCy) models come from their PyPI packages in uv.lock, so they are
# baked in and nothing downloads at run time.
#
#   docker build -t docproc:dev .                              # CPU torch (default)
#   docker build --build-arg TORCH_INDEX_URL= -t docproc:gpu . # torch exactly as locked (CUDA wheels)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG UV_VERSION=0.13.8
# CPU-only torch from the PyTorch index keeps the image ~2 GB smaller than the CUDA wheels on PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eu; \
    uv venv /opt/venv; \
    uv export --frozen --no-dev --extra operator --no-emit-project --no-hashes --format requirements-txt -o /tmp/locked.txt; \
    if [ -n "${TORCH_INDEX_URL}" ]; then \
        torch="$(grep -E '^torch==' /tmp/locked.txt | cut -d' ' -f1 | cut -d';' -f1)"; \
        torchvision="$(grep -E '^torchvision==' /tmp/locked.txt | cut -d' ' -f1 | cut -d';' -f1)"; \
        grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' /tmp/locked.txt > /tmp/rest.txt; \
        uv pip install --python /opt/venv/bin/python -r /tmp/rest.txt; \
        uv pip install --python /opt/venv/bin/python --no-deps --index-url "${TORCH_INDEX_URL}" \
            "${torch}+cpu" "${torchvision}+cpu"; \
    else \
        uv pip install --python /opt/venv/bin/python -r /tmp/locked.txt; \
    fi

COPY src ./src
COPY flows ./flows
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
    && /opt/venv/bin/python -c "import docproc, flows"

# The default OCR engine's models: easyocr's weights converted for OpenVINO once, at build time,
# into a path the read-only runtime image only reads (DOCPROC_MODEL_CACHE_DIR). Needs ~4.5 GiB
# of memory and a few minutes; a converted set is kept only if it reads the golden page.
RUN /opt/venv/bin/docproc models convert --cache-dir /opt/docproc-models

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="docproc" \
      org.opencontainers.image.description="Document processing: OCR, NLP and validated fields, orchestrated by Prefect and Dask" \
      org.opencontainers.image.licenses="Apache-2.0"
# opencv-python-headless bundles its libraries, so tini is the only system package.
# tini reaps the OCR subprocesses and forwards SIGTERM so `dask worker` and Prefect shut down cleanly.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${UID}" docproc \
    && useradd --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp --shell /usr/sbin/nologin docproc
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/docproc-models /opt/docproc-models
COPY flows /app/flows
WORKDIR /app
# Every writable path is under /tmp (an emptyDir in the chart) so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    PREFECT_HOME=/tmp/prefect \
    PREFECT_UI_STATIC_DIRECTORY=/tmp/prefect-ui \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    EASYOCR_MODULE_PATH=/tmp/easyocr \
    DASK_TEMPORARY_DIRECTORY=/tmp/dask \
    DOCPROC_MODEL_CACHE_DIR=/opt/docproc-models
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["docproc", "--help"]
