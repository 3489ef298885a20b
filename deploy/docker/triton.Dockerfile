# NVIDIA's Triton serving the reference models that `tailmark export` writes: the same models, with the same
# batching, as tailmark's own server, so the two servers can be measured by the same client.
#
#   deploy/docker/make-wheelhouse --extras torch,onnx        # the export stage needs torch and onnx
#   docker build -f deploy/docker/triton.Dockerfile -t tailmark-triton build/wheelhouse
#   docker run --gpus all --network host tailmark-triton    # gRPC 8001, HTTP 8000, metrics 8002
#
# The repository holds resnet (python backend), resnet_onnx (onnxruntime backend) and identity; see
# deploy/triton/repository.py. The export runs in a tailmark stage (EXPORT_BASE, built like server.Dockerfile);
# only the repository is copied into NVIDIA's image. Triton answers grpc.health.v1 on its gRPC port (the
# Kubernetes gRPC probe works as is); its image has no gRPC client, so HEALTHCHECK asks the HTTP ready URL.
ARG BASE=nvcr.io/nvidia/tritonserver:25.10-py3
ARG EXPORT_BASE=python:3.11-slim-bookworm

FROM ${EXPORT_BASE} AS export
ARG MAX_BATCH_SIZE=8
COPY . /wheels
RUN python3 -m venv /opt/tailmark \
 && /opt/tailmark/bin/pip install --no-cache-dir --no-index --find-links /wheels \
      "$(ls /wheels/tailmark-*.whl)[torch,onnx]" \
 && /opt/tailmark/bin/tailmark export --model resnet --triton-repo /models --max-batch-size "${MAX_BATCH_SIZE}"

FROM ${BASE}
COPY --from=export --chown=triton-server:triton-server /models /models
# hadolint ignore=DL3066
USER triton-server
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=3)"]
ENTRYPOINT ["tritonserver", "--model-repository=/models"]
