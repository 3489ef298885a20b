"""Prometheus text exposition of the model statistics, under Triton's ``nv_inference_*`` names.

Served by a plain ``http.server`` thread on ``--metrics-port`` (GET /metrics), so existing Triton
dashboards work unchanged. Counters are cumulative; durations are in microseconds, as Triton's are.
Names Triton has no equivalent for carry a ``tailmark_`` prefix.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tailmark.server.repository import Repository

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, type, help, value of a ModelStats snapshot)
FAMILIES = (
    ("nv_inference_request_success", "counter", "Number of successful inference requests", lambda s: s.success.count),
    ("nv_inference_request_failure", "counter", "Number of failed inference requests", lambda s: s.fail.count),
    ("nv_inference_count", "counter", "Number of inferences performed (batch elements)", lambda s: s.inference_count),
    ("nv_inference_exec_count", "counter", "Number of model executions (batches)", lambda s: s.execution_count),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (successes)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative time requests spent waiting in the scheduling queue in microseconds",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds",
        lambda s: s.compute_output.ns // 1000,
    ),
    ("nv_inference_pending_request_count", "gauge", "Requests waiting for execution", lambda s: s.pending),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(repository: Repository) -> str:
    """The whole exposition for every loaded model version."""
    models = [m for entry in repository.models.values() for m in entry.versions.values()]
    snapshots = [(m, m.stats.snapshot()) for m in models]
    lines: list[str] = []
    for name, kind, help_text, value in FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for model, snap in snapshots:
            labels = f'model="{_escape(model.name)}",version="{_escape(model.version)}"'
            lines.append(f"{name}{{{labels}}} {value(snap)}")
    name = "tailmark_inference_batch_executions"
    lines += [f"# HELP {name} Model executions by batch size", f"# TYPE {name} counter"]
    for model, snap in snapshots:
        for size, batch in sorted(snap.batches.items()):
            labels = f'model="{_escape(model.name)}",version="{_escape(model.version)}",batch_size="{size}"'
            lines.append(f"{name}{{{labels}}} {batch.compute_infer.count}")
    lines += _generative_lines(models)
    name = "tailmark_model_ready"
    lines += [f"# HELP {name} 1 when the model serves, 0 when it is unavailable", f"# TYPE {name} gauge"]
    for entry in repository.models.values():
        lines.append(f'{name}{{model="{_escape(entry.name)}"}} {int(entry.ready)}')
    return "\n".join(lines) + "\n"


# the synthetic LLMs' scheduler (server/generative/engine.py), named after vLLM's num_requests_* and *_tokens_total
GENERATIVE_FAMILIES = (
    ("tailmark_llm_requests_running", "gauge", "Sequences in the running batch", lambda e: len(e.running)),
    ("tailmark_llm_requests_waiting", "gauge", "Sequences waiting for a batch slot", lambda e: len(e.waiting)),
    ("tailmark_llm_prompt_tokens_total", "counter", "Input tokens admitted", lambda e: e.prompt_tokens_total),
    ("tailmark_llm_generation_tokens_total", "counter", "Tokens generated", lambda e: e.generation_tokens_total),
    ("tailmark_llm_steps_total", "counter", "Scheduler steps", lambda e: e.steps_total),
    ("tailmark_llm_steps_late_total", "counter", "Steps over 1 ms late on the model", lambda e: e.steps_late_total),
)


def _generative_lines(models) -> list[str]:
    engines = [(m, getattr(m.backend, "engine", None)) for m in models if hasattr(m.backend, "engine")]
    lines: list[str] = []
    for name, kind, help_text, value in GENERATIVE_FAMILIES if engines else ():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for model, engine in engines:
            labels = f'model="{_escape(model.name)}",version="{_escape(model.version)}"'
            lines.append(f"{name}{{{labels}}} {value(engine) if engine is not None else 0}")
    return lines


class MetricsServer:
    """GET /metrics on a daemon thread; ``port`` is the bound one (0 asks for any free port)."""

    def __init__(self, repository: Repository, host: str, port: int) -> None:
        repo = repository

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render(repo).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # scrapes every few seconds: keep them out of the log
                log.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
