"""A model repository on disk, Triton's layout: ``<root>/<model>/config.pbtxt`` and ``<model>/<N>/``.

Loading never stops at a bad model: a malformed config, a missing file or a backend that raises
leaves that model UNAVAILABLE with the reason (shown by RepositoryIndex and the log), and the rest
of the repository serves.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.backends.base import Backend, load_backend
from tailmark.server.batching import BatchingPolicy
from tailmark.server.config import ConfigError, TensorSpec, instance_count, load_config, tensor_specs
from tailmark.server.errors import ModelNotFound, ModelUnavailable
from tailmark.server.stats import ModelStats

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    version: str
    config: mc.ModelConfig
    backend: Backend
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    stats: ModelStats
    # one worker thread per model instance; None for backends that run inline
    executor: ThreadPoolExecutor | None = None
    instances: int = 1
    batching: BatchingPolicy | None = None  # None: each request runs as its own execution
    input_by_name: dict[str, TensorSpec] = field(init=False)
    output_by_name: dict[str, TensorSpec] = field(init=False)
    output_names: list[str] = field(init=False)  # all outputs, in config order (read-only: shared)

    def __post_init__(self) -> None:
        self.input_by_name = {spec.name: spec for spec in self.inputs}
        self.output_by_name = {spec.name: spec for spec in self.outputs}
        self.output_names = list(self.output_by_name)

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.version

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.backend.close()


@dataclass
class ModelEntry:
    """A model folder: its versions when loaded, or why it is unavailable."""

    name: str
    versions: dict[str, LoadedModel] = field(default_factory=dict)
    reason: str = ""  # non-empty: UNAVAILABLE

    @property
    def ready(self) -> bool:
        return bool(self.versions) and not self.reason


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.models: dict[str, ModelEntry] = {}

    def load_all(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a directory")
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            self.models[model_dir.name] = self._load_model(model_dir)

    def _load_model(self, model_dir: Path) -> ModelEntry:
        entry = ModelEntry(model_dir.name)
        try:
            self._check_inside_root(model_dir)
            config = load_config(model_dir / "config.pbtxt", name=model_dir.name)
            for version in self._versions_to_load(config, model_dir):
                entry.versions[version] = self._load_version(config, model_dir, version)
        except (ConfigError, OSError) as exc:
            entry.reason = str(exc)
        except Exception as exc:  # a backend that raises on load must not take the server down
            entry.reason = f"{model_dir.name}: load failed: {type(exc).__name__}: {exc}"
        if entry.reason:
            for loaded in entry.versions.values():
                loaded.close()
            entry.versions.clear()
            log.error("model %s is UNAVAILABLE: %s", entry.name, entry.reason)
        else:
            log.info("model %s ready (versions %s)", entry.name, ", ".join(entry.versions))
        return entry

    def _check_inside_root(self, model_dir: Path) -> None:
        """Refuse a model whose folder, or any file under it, resolves outside the repository root
        (a symlink to elsewhere on the machine must not be loadable through the server)."""
        for path in (model_dir, *model_dir.rglob("*")):
            if not path.resolve().is_relative_to(self.root):
                raise ConfigError(f"{path} resolves to {path.resolve()}, outside the model repository {self.root}")

    @staticmethod
    def _versions_to_load(config: mc.ModelConfig, model_dir: Path) -> list[str]:
        available = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if not available:
            raise ConfigError(f"{model_dir}: no numbered version folder (e.g. {model_dir}/1/)")
        policy = config.version_policy
        match policy.WhichOneof("policy_choice"):
            case "all":
                chosen = available
            case "specific":
                missing = sorted(set(policy.specific.versions) - set(available))
                if missing:
                    raise ConfigError(f"{model_dir}: version_policy asks for missing versions {missing}")
                chosen = sorted(policy.specific.versions)
            case _:
                chosen = available[-max(1, policy.latest.num_versions) :]
        return [str(v) for v in chosen]

    @staticmethod
    def _load_version(config: mc.ModelConfig, model_dir: Path, version: str) -> LoadedModel:
        batching = BatchingPolicy.from_config(config, source=str(model_dir / "config.pbtxt"))
        backend = load_backend(config, model_dir, model_dir / version)
        executor = None
        instances = instance_count(config)
        if not backend.runs_inline:
            executor = ThreadPoolExecutor(instances, thread_name_prefix=f"{config.name}-{version}")
        return LoadedModel(
            name=config.name,
            version=version,
            config=config,
            backend=backend,
            inputs=tensor_specs(config, outputs=False),
            outputs=tensor_specs(config, outputs=True),
            stats=ModelStats(config.name, version),
            executor=executor,
            instances=instances if executor is not None else 1,
            batching=batching,
        )

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The model to serve; the newest loaded version when ``version`` is empty."""
        entry = self.models.get(name)
        if entry is None:
            raise ModelNotFound(name)
        if entry.reason:
            raise ModelUnavailable(f"model {name!r} is unavailable: {entry.reason}")
        if not version:
            return entry.versions[max(entry.versions, key=int)]
        loaded = entry.versions.get(version)
        if loaded is None:
            raise ModelNotFound(name, version)
        return loaded

    def close(self) -> None:
        for entry in self.models.values():
            for loaded in entry.versions.values():
                loaded.close()
