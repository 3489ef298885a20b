"""``tailmark serve``: run the KServe-v2 gRPC server on a model repository."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from tailmark.server.settings import INT32_MAX, ServerSettings

log = logging.getLogger("tailmark.server")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model repository over KServe-v2 gRPC", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model-repository", type=Path, help="Triton-layout repository (default: built-in)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="gRPC port; 0 picks a free one (default 8001)")
    parser.add_argument(
        "--grpc-stack", choices=("sync", "aio"), default="sync", help="gRPC server stack (default sync: faster here)"
    )
    parser.add_argument("--sync-threads", type=int, default=8, help="RPC threads of the sync stack")
    parser.add_argument("--max-message-bytes", type=int, default=INT32_MAX, help="gRPC message size limit")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to drain in-flight requests on SIGTERM")
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
            grace_s=args.grace,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not settings.model_repository.is_dir():
        raise UsageError(f"model repository {settings.model_repository} is not a directory")
    return serve(settings)


def serve(settings: ServerSettings) -> int:
    """Load the repository, serve until SIGTERM/SIGINT, drain, and return the exit code."""
    from tailmark.server.core import InferenceCore
    from tailmark.server.repository import Repository

    repository = Repository(settings.model_repository)
    repository.load_all()
    core = InferenceCore(repository)
    try:
        if settings.stack == "sync":
            return _serve_sync(core, settings)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            return asyncio.run(_serve_aio(core, settings))
        return uvloop.run(_serve_aio(core, settings))
    finally:
        repository.close()


def _announce(settings: ServerSettings, port: int, core) -> None:
    ready = sum(1 for entry in core.repository.models.values() if entry.ready)
    total = len(core.repository.models)
    # parsed by the embedded default and the tests: keep the format
    print(f"tailmark serve: listening on {settings.host}:{port} ({ready}/{total} models ready)", flush=True)


async def _serve_aio(core, settings: ServerSettings) -> int:
    from tailmark.server.grpc_aio import AioGrpcServer

    server = AioGrpcServer(core, settings)
    port = await server.start()
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
