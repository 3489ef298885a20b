"""``tailmark serve``: run the KServe-v2 gRPC server on a model repository."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from tailmark.http2.limits import Limits
from tailmark.server.settings import INT32_MAX, STACKS, ServerSettings

log = logging.getLogger("tailmark.server")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model repository over KServe-v2 gRPC", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model-repository", type=Path, help="Triton-layout repository (default: built-in)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="gRPC port; 0 picks a free one (default 8001)")
    parser.add_argument(
        "--grpc-stack",
        choices=STACKS,
        default="h2",
        help="h2 (tailmark's own HTTP/2 frontend, the default), aio (grpc.aio) or sync (grpc's thread pool)",
    )
    parser.add_argument("--sync-threads", type=int, default=8, help="RPC threads of the sync stack")
    parser.add_argument("--max-message-bytes", type=int, default=INT32_MAX, help="gRPC message size limit")
    parser.add_argument(
        "--h2-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set one HTTP/2 limit of the h2 stack, e.g. max_concurrent_streams=200 (repeatable; docs/http2.md)",
    )
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to drain in-flight requests on SIGTERM")
    overload = parser.add_argument_group("overload")
    overload.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=0,
        help="RPCs in progress at once; beyond: RESOURCE_EXHAUSTED (0: no limit)",
    )
    overload.add_argument(
        "--max-queue-size",
        type=int,
        default=0,
        help="requests waiting for an unbatched model; beyond: RESOURCE_EXHAUSTED (0: no limit)",
    )
    overload.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: any free one)")
    parser.add_argument("--http-port", type=int, help="also serve KServe-v2 REST on this port (0: any free one)")
    secure = parser.add_argument_group("security")
    secure.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS")
    secure.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    secure.add_argument("--tls-ca", type=Path, help="PEM CA bundle: require client certificates (mutual TLS)")
    secure.add_argument(
        "--auth-token",
        default=os.environ.get("TAILMARK_AUTH_TOKEN", ""),
        help="require 'authorization: Bearer TOKEN' (default: $TAILMARK_AUTH_TOKEN; prefer it: flags show in ps)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="cProfile the serving thread (the event loop on aio) and write pstats to FILE on exit",
    )
    parser.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError

    repository_path = args.model_repository
    if repository_path is None:
        from tailmark.server.default_repository import ensure_default_repository

        repository_path = ensure_default_repository()
    try:
        settings = ServerSettings(
            model_repository=repository_path,
            host=args.host,
            port=args.port,
            stack=args.grpc_stack,
            sync_threads=args.sync_threads,
            max_message_bytes=args.max_message_bytes,
            h2_limits=Limits.from_assignments(args.h2_limit),
            grace_s=args.grace,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            max_queue_size=args.max_queue_size,
            workers=args.workers,
            metrics_port=args.metrics_port,
            http_port=args.http_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            auth_token=args.auth_token,
            profile_path=args.profile,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not settings.model_repository.is_dir():
        raise UsageError(f"model repository {settings.model_repository} is not a directory")
    if settings.workers > 1:
        from tailmark.server.workers import serve_workers

        return serve_workers(settings, serve)
    return serve(settings)


def serve(settings: ServerSettings, on_ready=None) -> int:
    """Load the repository, serve until SIGTERM/SIGINT, drain, and return the exit code.

    ``on_ready(port)`` replaces the "listening on" announcement (worker processes report to their parent).
    """
    from tailmark.server.core import InferenceCore
    from tailmark.server.repository import Repository

    repository = Repository(settings.model_repository)
    repository.load_all()
    core = InferenceCore(repository, max_queue_size=settings.max_queue_size)
    core.on_ready = on_ready
    metrics = None
    if settings.metrics_port is not None:
        from tailmark.server.metrics import MetricsServer

        metrics = MetricsServer(repository, settings.host, settings.metrics_port)
        metrics_port = metrics.start()
        if on_ready is None:
            print(f"tailmark serve: metrics on http://{settings.host}:{metrics_port}/metrics", flush=True)
    profiler = None
    if settings.profile_path is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        if settings.stack == "sync":
            return _serve_sync(core, settings)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(_serve_aio(core, settings))
        return uvloop.run(_serve_aio(core, settings))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(settings.profile_path)
        core.close()
        if metrics is not None:
            metrics.stop()
        repository.close()


def _announce(settings: ServerSettings, port: int, core) -> None:
    if core.on_ready is not None:
        core.on_ready(port)
        return
    ready = sum(1 for entry in core.repository.models.values() if entry.ready)
    total = len(core.repository.models)
    # parsed by the embedded default and the tests: keep the format
    print(f"tailmark serve: listening on {settings.host}:{port} ({ready}/{total} models ready)", flush=True)


async def _serve_aio(core, settings: ServerSettings) -> int:
    if settings.stack == "h2":
        from tailmark.server.h2.server import H2GrpcServer as Server
    else:
        from tailmark.server.grpc_aio import AioGrpcServer as Server

    server = Server(core, settings)
    port = await server.start()
    rest = None
    if settings.http_port is not None:
        from tailmark.server.http.server import HttpServer

        rest = HttpServer(core, settings, settings.http_port)
        http_port = await rest.start()
        if core.on_ready is None:
            print(f"tailmark serve: REST on http://{settings.host}:{http_port}", flush=True)
    core.ready = True
    _announce(settings, port, core)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.warning("draining (grace %.1f s)", settings.grace_s)
    core.ready = False
    await server.stop(settings.grace_s)
    if rest is not None:
        await rest.stop(settings.grace_s)
    print("tailmark serve: stopped", flush=True)
    return 0


def _serve_sync(core, settings: ServerSettings) -> int:
    import threading

    from tailmark.server.grpc_sync import SyncGrpcServer

    server = SyncGrpcServer(core, settings)
    port = server.start()
    core.ready = True
    _announce(settings, port, core)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    core.ready = False
    server.stop(settings.grace_s)
    print("tailmark serve: stopped", flush=True)
    return 0
