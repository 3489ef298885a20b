"""Synthetic models for testing the benchmark itself, with known costs.

- ``identity``: output i echoes input i.
- ``null``: every output is a tiny fixed zero tensor; the cheapest possible model.
- ``sleep``: holds its instance for a service time drawn from a distribution, then echoes. Parameters
  (config.pbtxt ``parameters``): ``distribution`` fixed|exponential|lognormal, ``mean_ms``,
  ``sigma`` (lognormal shape), ``seed``; and, to demonstrate coordinated omission, ``stall_ms`` with
  ``stall_after_requests``: execution number N stalls once for that long.
- ``error``: raises with the ``message`` parameter, for testing how failures are reported.
"""

from __future__ import annotations

import itertools
import math
import threading
import time

import numpy as np

from tailmark.protos import model_config_pb2 as mc
from tailmark.protos.codec import numpy_dtype
from tailmark.server.backends.base import Tensors
from tailmark.server.config import ConfigError, config_type_to_kserve, parameter, tensor_specs


class IdentityBackend:
    runs_inline = True

    def __init__(self, config: mc.ModelConfig) -> None:
        inputs, outputs = tensor_specs(config, outputs=False), tensor_specs(config, outputs=True)
        if len(inputs) != len(outputs):
            raise ConfigError(f"identity model {config.name!r} needs as many outputs as inputs")
        self._pairs = [(i.name, o.name) for i, o in zip(inputs, outputs)]

    def execute(self, inputs: Tensors) -> Tensors:
        return {out: inputs[inp] for inp, out in self._pairs}

    def close(self) -> None:
        pass


class NullBackend:
    runs_inline = True

    def __init__(self, config: mc.ModelConfig) -> None:
        self._batched = config.max_batch_size > 0
        self._first_input = config.input[0].name
        self._outputs = {
            o.name: np.zeros([max(d, 1) for d in o.dims], dtype=numpy_dtype(config_type_to_kserve(o.data_type)))
            for o in config.output
        }

    def execute(self, inputs: Tensors) -> Tensors:
        if not self._batched:
            return self._outputs
        batch = inputs[self._first_input].shape[0]
        return {name: np.broadcast_to(value, (batch, *value.shape)) for name, value in self._outputs.items()}

    def close(self) -> None:
        pass


class SleepBackend(IdentityBackend):
    runs_inline = False  # it blocks its instance, as a real model would

    def __init__(self, config: mc.ModelConfig) -> None:
        super().__init__(config)
        self._distribution = parameter(config, "distribution", "fixed")
        self._mean_s = float(parameter(config, "mean_ms", "10")) / 1e3
        self._sigma = float(parameter(config, "sigma", "0.5"))
        if self._distribution not in ("fixed", "exponential", "lognormal"):
            raise ConfigError(f"sleep model {config.name!r}: distribution {self._distribution!r} unknown")
        if self._mean_s < 0:
            raise ConfigError(f"sleep model {config.name!r}: mean_ms must be >= 0")
        self._rng = np.random.default_rng(int(parameter(config, "seed", "0")))
        self._rng_lock = threading.Lock()
        self._stall_s = float(parameter(config, "stall_ms", "0")) / 1e3
        self._stall_at = int(parameter(config, "stall_after_requests", "0"))
        self._executions = itertools.count(1)

    def service_time_s(self) -> float:
        match self._distribution:
            case "fixed":
                return self._mean_s
            case "exponential":
                with self._rng_lock:
                    return float(self._rng.exponential(self._mean_s))
            case _:  # lognormal with the requested mean: mu = ln(mean) - sigma^2 / 2
                mu = math.log(max(self._mean_s, 1e-9)) - self._sigma**2 / 2
                with self._rng_lock:
                    return float(self._rng.lognormal(mu, self._sigma))

    def execute(self, inputs: Tensors) -> Tensors:
        delay = self.service_time_s()
        if self._stall_s and next(self._executions) == self._stall_at:
            delay += self._stall_s
        _sleep_until(time.perf_counter() + delay)
        return super().execute(inputs)


def _sleep_until(deadline: float) -> None:
    # time.sleep overshoots by up to ~0.1 ms on Linux; finish the last stretch by yielding
    remaining = deadline - time.perf_counter()
    if remaining > 0.0005:
        time.sleep(remaining - 0.0003)
    while time.perf_counter() < deadline:
        time.sleep(0)


class ErrorBackend:
    runs_inline = True

    def __init__(self, config: mc.ModelConfig) -> None:
        self._message = parameter(config, "message", "model failed on purpose")

    def execute(self, inputs: Tensors) -> Tensors:
        raise RuntimeError(self._message)

    def close(self) -> None:
        pass


def create(kind: str, config: mc.ModelConfig):
    return {"identity": IdentityBackend, "null": NullBackend, "sleep": SleepBackend, "error": ErrorBackend}[kind](
        config
    )
