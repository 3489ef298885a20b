"""The images for real, with podman: the server and client images built from a wheelhouse on a locally made
base (deploy/docker/make-base-image: no registry needed), the pair started with deploy/compose.yaml's settings
(host network, the server and the client on disjoint CPUs, the server's grpc.health.v1 healthcheck before the
client starts, run directories on a volume), and a VALID result from the client container; then
`podman kube play` of the server Deployment (deploy/k8s/server.yaml) until its grpc.health.v1 check answers.

Building takes minutes (2 to 7 on 2 cores), so it runs only with TAILMARK_CONTAINER_TESTS=1, and only where
podman is installed; the linters in test_deploy_lint.py always run. TAILMARK_CONTAINER_BASE names another base
(default localhost/debian:bookworm, made if missing); TAILMARK_TORCH_INDEX the index torch comes from (default:
pip's own configuration). Hosts where crun refuses hybrid cgroups or raising ulimits is not allowed need
runc and lower default ulimits in containers.conf (docs/containers.md, "podman on restricted hosts").
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from support.deploy_manifests import DEPLOY, DOCKER, K8S, compose_services, cpu_set
from support.runcli import results, scenario
from tailmark.deploy.healthcheck import check as check_health

PODMAN = shutil.which("podman")
BASE = os.environ.get("TAILMARK_CONTAINER_BASE", "localhost/debian:bookworm")
TAG = "test"
pytestmark = [
    pytest.mark.skipif(PODMAN is None, reason="podman is not installed (apt-get install podman)"),
    pytest.mark.skipif(
        os.environ.get("TAILMARK_CONTAINER_TESTS") != "1",
        reason="building the images takes minutes: set TAILMARK_CONTAINER_TESTS=1 to run it",
    ),
    pytest.mark.timeout(1800),
]


def podman(*args: str, timeout_s: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout_s)
    if check:
        assert done.returncode == 0, f"podman {shlex.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Iterator[dict[str, str]]:
    """{"server": tag, "client": tag}, built now from a fresh wheelhouse of this checkout; removed afterwards."""
    if podman("image", "exists", BASE, check=False).returncode != 0:
        if shutil.which("mmdebstrap") is None:
            pytest.skip(f"no base image {BASE} and no mmdebstrap to make one (apt-get install mmdebstrap)")
        subprocess.run([str(DOCKER / "make-base-image"), BASE], check=True, timeout=600)
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    torch_index = os.environ.get("TAILMARK_TORCH_INDEX", "none")
    made = subprocess.run([str(DOCKER / "make-wheelhouse"), "-o", str(wheelhouse), "--torch-index", torch_index],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    built = {}
    for role in ("server", "client"):
        tag = f"localhost/tailmark-{role}:{TAG}"
        started = time.monotonic()
        # --layers=false: no cached layer per step, so a run leaves its two images and nothing else behind
        podman("build", "--layers=false", "--format", "docker", "--build-arg", f"BASE={BASE}",
               "-f", str(DOCKER / f"{role}.Dockerfile"), "-t", tag, str(wheelhouse), timeout_s=1500)  # fmt: skip
        size = podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
        print(f"{tag}: built in {time.monotonic() - started:.0f} s, {int(size) / 1e6:.0f} MB")
        built[role] = tag
    yield built
    podman("rmi", *built.values(), check=False)


def _with_ports(tokens: list[str], ports: dict[str, str]) -> list[str]:
    """compose's fixed ports moved to free ones (other servers may hold 8001 on a shared host)."""
    for fixed, free in ports.items():
        tokens = [token.replace(fixed, free) for token in tokens]
    return tokens


def _wait_healthy(name: str, check: list[str], timeout_s: float = 120) -> str:
    """Run the compose healthcheck's command inside the container until it passes, as compose would."""
    deadline = time.monotonic() + timeout_s
    while True:
        probe = podman("exec", name, *check, check=False)
        if probe.returncode == 0:
            return probe.stdout.strip()
        logs = podman("logs", name, check=False)
        assert time.monotonic() < deadline, f"not healthy: {probe.stdout}{probe.stderr}\n{logs.stdout[-2000:]}"
        time.sleep(1)


def test_compose_pair_on_disjoint_cpus_gives_a_valid_result(images, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the pair needs two CPUs")
    services = compose_services(DEPLOY / "compose.yaml")
    server, client = services["server"], services["client"]
    assert server["network_mode"] == client["network_mode"] == "host"
    ports = {"8001": str(free_port()), "8002": str(free_port())}
    name = f"tailmark-test-server-{os.getpid()}"
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)  # the client runs as uid 10001
    podman("run", "-d", "--rm", "--name", name, "--network", "host", "--cpuset-cpus", str(server["cpuset"]),
           images["server"], *_with_ports(server["command"], ports))  # fmt: skip
    try:
        check = _with_ports(server["healthcheck"]["test"][1:], ports)  # after "CMD"
        assert _wait_healthy(name, check).endswith("SERVING")
        cpus = podman("inspect", "--format", "{{.HostConfig.CpusetCpus}}", name).stdout.strip()
        assert cpu_set(cpus) == cpu_set(server["cpuset"])
        command = _with_ports(shlex.split(client["command"]), ports)
        # a short Server scenario instead of the default's four (later flags win)
        # (resnet costs the one server CPU ~6.5 ms a request: 80/s keeps it about half busy)
        short = ["--scenario", "server", "--target-qps", "80", "--latency-bound-ms", "100", "--duration", "7",
                 "--warmup", "1", "--out", "/runs/pair"]  # fmt: skip
        run = podman("run", "--rm", "--network", "host", "--cpuset-cpus", str(client["cpuset"]),
                     "-v", f"{runs}:/runs", images["client"], *command, *short, check=False)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        podman("rm", "-f", name, check=False)
    doc = results(runs / "pair")
    everything = scenario(doc, "server")["classes"]["all"]
    assert everything["error_count"] == 0, everything["errors"]
    assert everything["ok_count"] >= 459  # enough for p99's early-stopping rule at 0 over the bound
    failed = [c for c in everything["verdict"]["checks"] if not c["passed"]]
    if everything["verdict"].get("cause") == "host":  # the tool itself says this host could not judge the run
        pytest.skip(f"the host was too noisy to judge the pair's run here: {failed[-1]['detail']}")
    assert everything["verdict"]["result"] == "VALID", json.dumps(failed, indent=1)


def test_kube_play_runs_the_server_deployment(images, tmp_path):
    docs = list(yaml.safe_load_all((K8S / "server.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (spec,) = deployment["spec"]["template"]["spec"]["containers"]
    spec["image"] = images["server"]  # kustomize's images: would name the registry's copy
    for port in spec["ports"]:  # podman publishes every containerPort on the host: free ones, not 8000-8002
        port["hostPort"] = free_port()
    grpc_port = next(p["hostPort"] for p in spec["ports"] if p["name"] == "grpc")
    manifest = tmp_path / "server.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    played = podman("kube", "play", str(manifest), check=False)
    try:
        assert played.returncode == 0, played.stdout + played.stderr
        name = f"{deployment['metadata']['name']}-pod-0-{spec['name']}"  # podman's pod-0-<container> naming
        assert _wait_healthy(name, ["python", "-m", "tailmark.deploy.healthcheck"]).endswith("SERVING")
        assert check_health(f"127.0.0.1:{grpc_port}") == "SERVING"  # from outside the pod, as the kubelet asks
        limits = spec["resources"]["limits"]
        memory = podman("inspect", "--format", "{{.HostConfig.Memory}}", name).stdout.strip()
        assert int(memory) == int(limits["memory"].removesuffix("Gi")) * 2**30
        uid = podman("exec", name, "id", "-u").stdout.strip()
        assert uid == str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    finally:
        podman("kube", "down", str(manifest), check=False)
