# tailmark's client: `tailmark run|merge|report|...` against any KServe-v2 endpoint; no torch, no server.
# Run directories go to /runs (mount a volume there).
#
#   deploy/docker/make-wheelhouse --extras '' -o build/wheelhouse-client   # or reuse the server's wheelhouse
#   podman build --format docker -f deploy/docker/client.Dockerfile -t tailmark-client build/wheelhouse-client
#   podman run --rm -v runs:/runs tailmark-client run --target HOST:8001 --model resnet --out /runs/r1
#
# The build context is the wheelhouse: nothing is fetched during the build. BASE: see server.Dockerfile.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
COPY . /wheels
RUN python3 -m venv /opt/tailmark \
 && /opt/tailmark/bin/pip install --no-cache-dir --no-index --find-links /wheels "$(ls /wheels/tailmark-*.whl)" \
 && /opt/tailmark/bin/pip uninstall --yes pip

FROM ${BASE}
RUN useradd --no-log-init --system --uid 10001 --create-home --home-dir /home/tailmark tailmark \
 && mkdir /runs && chown tailmark /runs
COPY --from=build /opt/tailmark /opt/tailmark
ENV PATH=/opt/tailmark/bin:$PATH \
    HOME=/home/tailmark \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /runs
VOLUME ["/runs"]
ENTRYPOINT ["tailmark"]
CMD ["--help"]
