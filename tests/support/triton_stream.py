"""A test-side client of decoupled (streaming) models over gRPC ModelStreamInfer, with tritonclient, and the real
Triton that serves them (tests/server/test_triton_generative.py, test_triton_lm.py)."""

from __future__ import annotations

import queue
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from support import peer_venvs
from tailmark.deploy.triton.launch import TritonUnavailable, ensure_venv


def skip_without_triton() -> None:
    peer_venvs.prebuild()  # this session's other peers too, in parallel
    try:
        ensure_venv()
    except TritonUnavailable as exc:
        pytest.skip(f"real Triton unavailable: {exc}")


def export_cli(*args: str) -> subprocess.CompletedProcess:
    """``tailmark export`` of the smallest reference model (ONNX only), plus ``args``."""
    command = [sys.executable, "-m", "tailmark", "export", "--model", "digits_cnn", "--formats", "onnx", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


class Stream:
    """One ModelStreamInfer call; ``generate`` sends a request and collects its responses up to the final one,
    stamping each with its arrival (perf_counter seconds from the send)."""

    def __init__(self, target: str) -> None:
        self.client = grpcclient.InferenceServerClient(target)
        self.responses: queue.Queue = queue.Queue()
        self.client.start_stream(callback=self._arrived)

    def _arrived(self, result, error) -> None:
        self.responses.put((time.perf_counter(), result, error))

    def generate(self, model: str, prompt: bytes, **scalars) -> list[tuple[float, bytes | None, bool]]:
        inputs = [tensor("text_input", np.array([prompt], dtype=np.object_), "BYTES")]
        kinds = {"max_tokens": (np.int32, "INT32"), "stream": (bool, "BOOL"), "ignore_eos": (bool, "BOOL"),
                 "seed": (np.int64, "INT64")}  # fmt: skip
        for name, value in scalars.items():
            dtype, datatype = kinds[name]
            inputs.append(tensor(name, np.array([value], dtype=dtype), datatype))
        self.sent = sent = time.perf_counter()
        self.client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        got = []
        while True:
            arrived, result, error = self.responses.get(timeout=30)
            if error is not None:
                raise error
            final = result.get_response().parameters["triton_final_response"].bool_param
            output = result.as_numpy("text_output")
            got.append((arrived - sent, None if output is None else bytes(output.reshape(-1)[0]), final))
            if final:
                return got

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    made = grpcclient.InferInput(name, list(array.shape), datatype)
    made.set_data_from_numpy(array)
    return made
