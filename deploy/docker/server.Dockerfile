# tailmark's server: `tailmark serve` on the built-in default repository (identity, null, sleep, resnet) or on
# a repository mounted at /models (pass --model-repository /models). gRPC 8001, REST 8000, metrics 8002.
#
#   deploy/docker/make-wheelhouse                      # once per checkout: build/wheelhouse (needs an index)
#   podman build --format docker -f deploy/docker/server.Dockerfile -t tailmark-server build/wheelhouse
#
# The build context is the wheelhouse: nothing is fetched during the build. BASE must carry python3 (>= 3.11,
# the wheelhouse's Python) with venv; `--build-arg BASE=localhost/debian:bookworm` builds on a base made
# without a registry (deploy/docker/make-base-image). `--format docker` keeps the HEALTHCHECK (OCI drops it).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG EXTRAS=torch
COPY . /wheels
# one venv, copied whole into the final stage; the wheelhouse stays behind in this stage, and so do
# PyTorch's own C++ test binaries (~120 MB, never run by a server)
RUN python3 -m venv /opt/tailmark \
 && /opt/tailmark/bin/pip install --no-cache-dir --no-index --find-links /wheels \
      "$(ls /wheels/tailmark-*.whl)[${EXTRAS}]" \
 && /opt/tailmark/bin/pip uninstall --yes pip \
 && rm -rf /opt/tailmark/lib/python3*/site-packages/torch/test /opt/tailmark/lib/python3*/site-packages/torch/bin/test_*

FROM ${BASE}
RUN useradd --no-log-init --system --uid 10001 --create-home --home-dir /home/tailmark tailmark
COPY --from=build /opt/tailmark /opt/tailmark
ENV PATH=/opt/tailmark/bin:$PATH \
    HOME=/home/tailmark \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/tailmark
# the default repository is built once here (~/.cache/tailmark), not at every start
RUN python -c "from tailmark.server.default_repository import ensure_default_repository as e; print(e())"
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "tailmark.deploy.healthcheck"]
ENTRYPOINT ["tailmark", "serve", "--host", "0.0.0.0"]
CMD ["--port", "8001", "--http-port", "8000", "--metrics-port", "8002"]
