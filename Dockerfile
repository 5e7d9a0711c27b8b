# syntax=docker/dockerfile:1
# EmoDistill image. Stages:
#   build : CPU torch; trains the demo model and exports it to ONNX. --build-arg DEMO=voices
#           (the default) downloads RAVDESS and TESS (needs network; non-commercial licences)
#           and trains on real voices, falling back to synthetic speech when the download
#           fails; DEMO=synthetic trains on synthetic speech only.
#   cpu   : slim Python runtime, onnxruntime (CPU), no torch        -> `--target cpu`
#   gpu   : CUDA 13 + cuDNN runtime, onnxruntime-gpu, no torch      -> default (last stage)
# onnxruntime-gpu 1.31 is built against CUDA 13 (its CUDA provider links libcublasLt.so.13),
# so the runtime image's CUDA major must be 13.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEMO=voices
# DL3013 is ignored where the project itself is installed: its dependency ranges live in
# pyproject.toml, the one place they are declared.

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX
ARG DEMO
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
WORKDIR /src
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY emocore ./emocore
COPY server ./server
COPY training ./training
COPY export ./export
# hadolint ignore=DL3013
RUN pip install ".[train,serve,cpu]"
# The demo model: corpus -> both teachers -> distilled student -> ONNX model directory (the
# command prints which corpus it trained on and why).
RUN if [ "$DEMO" = synthetic ]; then choice=--synthetic; else choice=--fetch; fi \
    && python -m training.demo --export /models/demo --run-dir /tmp/run "$choice" \
    && rm -rf /tmp/run data

FROM ${PYTHON_IMAGE} AS cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    EMODISTILL_MODEL_DIR=/models/demo EMODISTILL_DEVICE=cpu EMODISTILL_HOST=0.0.0.0 EMODISTILL_PORT=8000
WORKDIR /app
COPY pyproject.toml README.md ./
COPY emocore ./emocore
COPY server ./server
# hadolint ignore=DL3013
RUN pip install ".[serve,cpu]" \
    && useradd --system --uid 10001 --no-create-home emodistill
COPY --from=build --chown=10001:10001 /models /models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
CMD ["python", "-m", "server"]

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    EMODISTILL_MODEL_DIR=/models/demo EMODISTILL_DEVICE=auto EMODISTILL_HOST=0.0.0.0 EMODISTILL_PORT=8000
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY emocore ./emocore
COPY server ./server
# hadolint ignore=DL3013
RUN pip install ".[serve,gpu]" \
    && useradd --system --uid 10001 --no-create-home emodistill
COPY --from=build --chown=10001:10001 /models /models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
CMD ["python", "-m", "server"]
