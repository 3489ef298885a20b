"""Read deploy/'s compose and Kubernetes files the way their runners would (tests/deploy/)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
COMPOSE_FILES = (DEPLOY / "compose.yaml", DEPLOY / "compose.triton.yaml")
KUBELET_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resource_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_object(kind: str, name: str) -> dict:
    for path in k8s_resource_files():
        for doc in k8s_documents(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise KeyError(f"no {kind} {name} under {K8S}")


def container(workload: dict, name: str) -> dict:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(spec: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in spec.get("env", []) if "value" in item}


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """``$(NAME)`` as the kubelet expands it in command and args: a defined variable's value, else unchanged;
    ``$$`` is a literal ``$``."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return KUBELET_VAR.sub(one, text)


def cpu_set(text: str) -> set[int]:
    """``0-2,5`` as {0, 1, 2, 5} (cpuset's list syntax)."""
    cpus: set[int] = set()
    for part in str(text).split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def compose_services(path: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    """The file's services with ``${NAME:-default}`` interpolated from ``env`` (else the default), as compose
    does before it reads the values."""
    env = env or {}

    def one(match: re.Match) -> str:
        return env.get(match.group(1)) or match.group(2)

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}", one, path.read_text())
    return yaml.safe_load(text)["services"]
