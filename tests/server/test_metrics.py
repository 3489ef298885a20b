"""``--metrics-port``: a Prometheus scrape of a real server shows Triton's nv_inference_* families."""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.repository import batched_sleep_config, write_test_repository
from support.serve import ServerProcess
from tailmark.server.default_repository import write_model

METRICS = re.compile(r"metrics on (http://\S+)")
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


@pytest.fixture(scope="module", params=["sync", "aio", "h2"])
def server(request, tmp_path_factory):
    repository = write_test_repository(tmp_path_factory.mktemp("metrics"))
    write_model(repository, "metrics_batched", batched_sleep_config(20, dynamic_batching=""))
    with ServerProcess(repository, "--grpc-stack", request.param, "--metrics-port", "0") as process:
        yield process


def scrape(process) -> dict[tuple[str, str], float]:
    url = next(METRICS.search(line).group(1) for line in process.lines if METRICS.search(line))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[(match.group(1), match.group(2))] = float(match.group(3))
    return samples


def test_counts_and_durations_follow_the_requests(server):
    labels = 'model="identity_int32",version="1"'
    before = scrape(server)
    data = np.arange(4, dtype=np.int32)
    with grpcclient.InferenceServerClient(server.target) as client:
        tensor = grpcclient.InferInput("INPUT0", [4], "INT32")
        tensor.set_data_from_numpy(data)
        for _ in range(5):
            client.infer("identity_int32", [tensor])
        bad = grpcclient.InferInput("INPUT0", [4], "FP32")
        bad.set_data_from_numpy(data.astype(np.float32))
        with pytest.raises(InferenceServerException):
            client.infer("identity_int32", [bad])
    after = scrape(server)

    def delta(name: str) -> float:
        return after[(name, labels)] - before.get((name, labels), 0)

    assert delta("nv_inference_request_success") == 5
    assert delta("nv_inference_request_failure") == 1
    assert delta("nv_inference_count") == 5
    assert delta("nv_inference_exec_count") == 5
    assert delta("nv_inference_request_duration_us") > 0
    for name in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert (f"nv_inference_{name}_duration_us", labels) in after
    assert after[("nv_inference_pending_request_count", labels)] == 0
    assert after[("tailmark_model_ready", 'model="broken_config"')] == 0


def test_batch_sizes_are_exported(server):
    with grpcclient.InferenceServerClient(server.target) as client:

        def one(value: float) -> None:
            tensor = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
            tensor.set_data_from_numpy(np.full((1, 2), value, dtype=np.float32))
            client.infer("metrics_batched", [tensor])

        threads = [threading.Thread(target=one, args=(float(i),)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    samples = scrape(server)
    sizes = {
        int(re.search(r'batch_size="(\d+)"', labels).group(1)): value
        for (name, labels), value in samples.items()
        if name == "tailmark_inference_batch_executions" and 'model="metrics_batched"' in labels
    }
    assert sum(size * count for size, count in sizes.items()) == 6
    assert max(sizes) > 1
    assert samples[("nv_inference_exec_count", 'model="metrics_batched",version="1"')] == sum(sizes.values())


def test_other_paths_are_404(server):
    url = next(METRICS.search(line).group(1) for line in server.lines if METRICS.search(line))
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
    assert error.value.code == 404
