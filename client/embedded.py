"""The embedded default: a ``tailmark serve`` child process on a free loopback port.

The client never imports the server; it starts it the way a user would and reads the port it prints.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from tailmark.client.errors import Unreachable

LISTENING = re.compile(r"listening on (\S+):(\d+)")
METRICS = re.compile(r"metrics on (http://\S+/metrics)")  # printed before "listening on" with --metrics-port
REST = re.compile(r"REST on (http://\S+)")  # printed before "listening on" with --http-port
# client transports that speak HTTP/1.1 to the server's --http-port, not gRPC to its --port
HTTP_TRANSPORTS = frozenset({"http", "openai"})


class EmbeddedServer:
    """Context manager: starts ``tailmark serve --port 0`` (and ``--http-port 0`` with ``http``) and stops it
    (SIGTERM, then kill). ``target`` is the gRPC address, ``http_target`` the REST one ("" without ``http``)."""

    def __init__(
        self,
        repository: Path | None = None,
        *extra_args: str,
        startup_timeout_s: float = 180.0,
        cpus: tuple[int, ...] | None = None,
        http: bool = False,
    ) -> None:
        self.repository = repository
        self.cpus = cpus  # pin the server to these CPUs from its first instruction (its thread pools size from it)
        self.extra_args = (*extra_args, "--http-port", "0") if http else extra_args  # more `tailmark serve` flags
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.target = ""
        self.http_target = ""
        self.metrics_url = ""  # with --metrics-port among the extra args: where its Prometheus text is
        self.tail: deque[str] = deque(maxlen=500)  # last lines of its output, for error messages and tests

    def __enter__(self) -> EmbeddedServer:
        if self.process is not None:  # already started (tests start it at construction)
            return self
        args = [sys.executable, "-m", "tailmark", "serve", "--port", "0", *self.extra_args]
        if self.repository is not None:
            args += ["--model-repository", str(self.repository)]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a Ctrl-C meant for the client must not kill the server mid-run
            preexec_fn=self._pin if self.cpus else None,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.tail.append(line.rstrip())
            if metrics := METRICS.search(line):
                self.metrics_url = metrics.group(1)
            if rest := REST.search(line):
                self.http_target = rest.group(1)
            match = LISTENING.search(line)
            if match:
                self.target = f"{match.group(1)}:{match.group(2)}"
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        last = self.tail[-1] if self.tail else "no output"
        raise Unreachable(f"the embedded server did not start: {last}")

    def target_for(self, transport: str) -> str:
        """The address a client with ``transport`` connects to."""
        return self.http_target if transport in HTTP_TRANSPORTS else self.target

    def _pin(self) -> None:
        os.sched_setaffinity(0, self.cpus)

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.tail.append(line.rstrip())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the server drains), then kill after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()
