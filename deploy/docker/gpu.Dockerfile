# tailmark's server on a GPU: the same image as server.Dockerfile, on NVIDIA's CUDA base with the CUDA build of
# torch. Models whose instance group is KIND_GPU or KIND_AUTO run on CUDA (README "CUDA").
#
#   deploy/docker/make-wheelhouse -o build/wheelhouse-cu130 --python-version 3.12 \
#       --torch-index https://download.pytorch.org/whl/cu130          # pick the CUDA build for your driver
#   docker build -f deploy/docker/gpu.Dockerfile -t tailmark-server-gpu build/wheelhouse-cu130
#   docker run --gpus all --network host tailmark-server-gpu
#
# The CUDA torch wheels bring their own CUDA libraries, so the small `base` flavour of the CUDA image is enough;
# it has no Python, which comes from the distribution (Ubuntu 24.04: Python 3.12, hence --python-version above).
# An air-gapped lab needs a distribution mirror for that step, or a BASE that already has python3 and venv.
ARG BASE=nvidia/cuda:13.0.1-base-ubuntu24.04

FROM ${BASE} AS build
ARG EXTRAS=torch
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY . /wheels
# as in server.Dockerfile: only the venv goes on, without PyTorch's own C++ test binaries
RUN python3 -m venv /opt/tailmark \
 && /opt/tailmark/bin/pip install --no-cache-dir --no-index --find-links /wheels \
      "$(ls /wheels/tailmark-*.whl)[${EXTRAS}]" \
 && /opt/tailmark/bin/pip uninstall --yes pip \
 && rm -rf /opt/tailmark/lib/python3*/site-packages/torch/test /opt/tailmark/lib/python3*/site-packages/torch/bin/test_*

FROM ${BASE}
# versions come with the base image's distribution release, which BASE pins
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --no-log-init --system --uid 10001 --create-home --home-dir /home/tailmark tailmark
COPY --from=build /opt/tailmark /opt/tailmark
ENV PATH=/opt/tailmark/bin:$PATH \
    HOME=/home/tailmark \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/tailmark
RUN python -c "from tailmark.server.default_repository import ensure_default_repository as e; print(e())"
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-m", "tailmark.deploy.healthcheck"]
ENTRYPOINT ["tailmark", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8001", "--http-port", "8000", "--metrics-port", "8002"]
