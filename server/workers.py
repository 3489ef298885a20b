"""``--workers N``: N server processes on one port (SO_REUSEPORT), each with its own models and batchers.

The parent forks before any gRPC object exists (gRPC's core does not survive a fork of a process that
has started it), waits until every worker listens, announces the port once, forwards SIGTERM/SIGINT
and exits with the worst worker exit code. The kernel spreads new connections over the workers; a
connection stays on its worker, so a client needs several connections to use them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Callable

from tailmark.server.settings import ServerSettings


def _reserve_port(host: str) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: it fixes the port for --port 0 and takes no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def serve_workers(settings: ServerSettings, serve: Callable[..., int]) -> int:
    holder = None
    port = settings.port
    if port == 0:
        holder = _reserve_port(settings.host)
        port = holder.getsockname()[1]
    read_fd, write_fd = os.pipe()
    children = []
    for index in range(settings.workers):
        metrics_port = settings.metrics_port
        if metrics_port:  # each worker scrapes its own statistics: consecutive ports
            metrics_port += index
        profile_path = settings.profile_path  # one file per worker: FILE.0, FILE.1, ...
        if profile_path is not None:
            profile_path = profile_path.with_name(f"{profile_path.name}.{index}")
        worker = dataclasses.replace(settings, port=port, metrics_port=metrics_port, profile_path=profile_path)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            code = 1
            try:
                code = serve(worker, on_ready=lambda _port: os.write(write_fd, b"r"))
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_fd)
    ready = 0
    while ready < len(children):
        data = os.read(read_fd, len(children) - ready)
        if not data:  # every worker closed the pipe: some died before listening
            break
        ready += len(data)
    os.close(read_fd)

    def forward(signum, _frame) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if ready < len(children):
        forward(signal.SIGTERM, None)
    else:
        extra = f"; metrics on ports {settings.metrics_port}+" if settings.metrics_port else ""
        print(f"tailmark serve: listening on {settings.host}:{port} ({len(children)} workers{extra})", flush=True)
    codes = []
    for pid in children:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    if holder is not None:
        holder.close()
    if ready < len(children):
        return 1
    print("tailmark serve: stopped", flush=True)
    return max(abs(code) for code in codes)
