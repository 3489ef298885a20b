"""Triton-format ``config.pbtxt`` files: parse, validate, and describe a model's tensors.

The parsed message is our ``tailmark.v2.ModelConfig``, field-compatible with Triton's
``inference.ModelConfig``, so the ModelConfig RPC returns exactly what the file says (plus defaults
that Triton would fill in: the name, and one CPU instance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from tailmark.protos import model_config_pb2 as mc
from tailmark.protos.codec import DATATYPES

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config.pbtxt that cannot be served; the message names the file and the problem."""


def kserve_to_config_type(datatype: str) -> int:
    return mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def config_type_to_kserve(data_type: int) -> str:
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output as clients see it: the batch dimension (-1) included when batching."""

    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(want in (-1, got) for want, got in zip(self.shape, shape))


def tensor_specs(config: mc.ModelConfig, *, outputs: bool) -> tuple[TensorSpec, ...]:
    entries = config.output if outputs else config.input
    batch = (-1,) if config.max_batch_size > 0 else ()
    return tuple(
        TensorSpec(entry.name, config_type_to_kserve(entry.data_type), batch + tuple(int(d) for d in entry.dims))
        for entry in entries
    )


def parse_config(text: str, *, source: str = "config.pbtxt", name: str = "") -> mc.ModelConfig:
    """Parse and validate config text; ``name`` fills in a missing name (Triton uses the folder)."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not config.name:
        config.name = name
    elif name and config.name != name:
        raise ConfigError(f"{source}: name {config.name!r} does not match its folder {name!r}")
    if not config.instance_group:
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    validate_config(config, source=source)
    return config


def load_config(path: Path, *, name: str = "") -> mc.ModelConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, source=str(path), name=name)


def validate_config(config: mc.ModelConfig, *, source: str) -> None:
    if config.max_batch_size < 0:
        raise ConfigError(f"{source}: max_batch_size={config.max_batch_size}; must be >= 0")
    if not config.input or not config.output:
        raise ConfigError(f"{source}: a model needs at least one input and one output")
    for kind, entries in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for entry in entries:
            if not entry.name:
                raise ConfigError(f"{source}: an {kind} has no name")
            if entry.name in seen:
                raise ConfigError(f"{source}: {kind} {entry.name!r} is declared twice")
            seen.add(entry.name)
            if config_type_to_kserve(entry.data_type) not in DATATYPES:
                raise ConfigError(f"{source}: {kind} {entry.name!r} has no data_type")
            if any(d < -1 or d == 0 for d in entry.dims):
                raise ConfigError(f"{source}: {kind} {entry.name!r} dims {list(entry.dims)}: each must be > 0 or -1")
    for group in config.instance_group:
        if group.count < 0:
            raise ConfigError(f"{source}: instance_group count={group.count}; must be >= 0")


def instance_count(config: mc.ModelConfig) -> int:
    return max(1, sum(group.count or 1 for group in config.instance_group))


def parameter(config: mc.ModelConfig, key: str, default: str = "") -> str:
    entry = config.parameters.get(key)
    return entry.string_value if entry is not None else default


def to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)
