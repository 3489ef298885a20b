"""deploy/'s Dockerfiles, compose files and Kubernetes manifests: the linters the issue names (hadolint,
yamllint, kubernetes-validate against the Kubernetes schemas) and what the files promise each other (disjoint
CPUs, Guaranteed QoS, one shard count, grpc.health.v1 readiness). Fast and offline; no container is started."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.deploy_manifests import (
    COMPOSE_FILES,
    DEPLOY,
    DOCKER,
    K8S,
    compose_services,
    container,
    cpu_set,
    env_of,
    k8s_documents,
    k8s_object,
    k8s_resource_files,
)

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    if path is None:
        pytest.skip(f"{name} is not installed (it comes with the test extras: pip install -e '.[test]')")
    return path


def test_dockerfiles_pass_hadolint():
    dockerfiles = sorted(DOCKER.glob("*.Dockerfile"))
    assert {p.name for p in dockerfiles} >= {"server.Dockerfile", "client.Dockerfile", "gpu.Dockerfile",
                                             "triton.Dockerfile"}  # fmt: skip
    lint = subprocess.run([tool("hadolint"), *map(str, dockerfiles)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfiles_install_only_from_the_wheelhouse():
    for path in DOCKER.glob("*.Dockerfile"):
        text = path.read_text()
        assert "ARG BASE=" in text and "FROM ${BASE}" in text, path.name  # the base is a build argument
        installs = [line for line in text.splitlines() if "pip install" in line]
        assert installs, path.name
        for line in installs:
            assert "--no-index" in line and "--find-links /wheels" in line, (path.name, line)
        assert "\nUSER " in text, path.name  # never root
        if path.name != "client.Dockerfile":  # the client is a command, not a service
            assert "\nHEALTHCHECK " in text, path.name


def test_yaml_passes_yamllint():
    lint = subprocess.run(
        [tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_manifests_pass_kubernetes_validate():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="comes with the test extras")
    kinds = []
    for path in k8s_resource_files():
        for doc in k8s_documents(path):
            kubernetes_validate.validate(doc, "1.37.0", strict=True)  # raises on any schema error
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["Deployment", "Job", "Job", "PersistentVolumeClaim", "Service"]


def test_kustomization_lists_every_manifest_and_renders():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_resource_files())
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize rendering is not checked here")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    images = {c["image"] for doc in docs if "template" in doc.get("spec", {})
              for c in doc["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {"tailmark-server:0.1.0", "tailmark-client:0.1.0"}


def _guaranteed_whole_cpus(spec: dict) -> None:
    resources = spec["resources"]
    assert resources["requests"] == resources["limits"], spec["name"]  # Guaranteed QoS
    cpu = str(resources["limits"]["cpu"])
    assert cpu.isdigit() and int(cpu) >= 1, (spec["name"], cpu)  # the static CPU manager pins whole cores only


def test_server_deployment_is_guaranteed_and_ready_on_grpc_health():
    server = container(k8s_object("Deployment", "tailmark-server"), "server")
    _guaranteed_whole_cpus(server)
    grpc_port = next(p["containerPort"] for p in server["ports"] if p["name"] == "grpc")
    assert server["args"][server["args"].index("--port") + 1] == str(grpc_port)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["grpc"]["port"] == grpc_port  # the kubelet's grpc.health.v1 Check
    service_ports = {p["name"]: p["port"] for p in k8s_object("Service", "tailmark-server")["spec"]["ports"]}
    assert service_ports["grpc"] == grpc_port


def test_indexed_job_and_merge_job_agree():
    load_job = k8s_object("Job", "tailmark-load")
    merge_job = k8s_object("Job", "tailmark-merge")
    load, merge = container(load_job, "load"), container(merge_job, "merge")
    load_env, merge_env = env_of(load), env_of(merge)
    spec = load_job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(load_env["SHARDS"]) == int(merge_env["SHARDS"])
    assert load_env["RUN_NAME"] == merge_env["RUN_NAME"]
    assert "--shard=$(JOB_COMPLETION_INDEX)/$(SHARDS)" in load["args"]
    assert "--start-at=$(START_AT)" in load["args"]  # the common instant, from the Job's spec
    assert {m["mountPath"] for m in load["volumeMounts"]} == {m["mountPath"] for m in merge["volumeMounts"]}
    _guaranteed_whole_cpus(load)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_pins_server_and_client_to_disjoint_cpus(path):
    services = compose_services(path)
    assert set(services) == {"server", "client"}
    server, client = cpu_set(services["server"]["cpuset"]), cpu_set(services["client"]["cpuset"])
    assert server and client and not server & client
    assert services["client"]["depends_on"]["server"]["condition"] == "service_healthy"
    assert any(volume.endswith(":/runs") for volume in services["client"]["volumes"])
    moved = compose_services(path, {"SERVER_CPUS": "2-3", "CLIENT_CPUS": "4"})
    assert moved["server"]["cpuset"] == "2-3" and moved["client"]["cpuset"] == "4"
