"""Server settings: one frozen dataclass, filled from flags by server/cli.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tailmark.http2.limits import Limits

INT32_MAX = 2**31 - 1
# what a call without the configured bearer token is told (UNAUTHENTICATED), on every stack
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"
STACKS = ("h2", "aio", "sync")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    # --- where ---
    model_repository: Path
    host: str = "127.0.0.1"
    port: int = 8001  # 0: any free port (the chosen one is printed)
    # --- gRPC ---
    # "h2" (the default): tailmark's own gRPC-over-HTTP/2 frontend on asyncio (server/h2/); "aio": grpc.aio on
    # uvloop; "sync": grpc's thread pool. bench/server_stack.py, identity model, 1-32 in flight on 2 cores:
    # h2 uses 2.6-3.3x less server CPU per request than aio (59-182 vs 193-471 us) and serves 1.5-2.6x the
    # rate; sync 0.65-0.92x aio.
    stack: str = "h2"
    sync_threads: int = 8  # worker threads of the sync stack
    max_message_bytes: int = INT32_MAX  # gRPC's own default (4 MiB) breaks large tensors
    h2_limits: Limits = field(default_factory=Limits)  # the h2 stack's HTTP/2 limits (--h2-limit; docs/http2.md)
    # --- overload ---
    max_concurrent_rpcs: int = 0  # 0: unlimited; beyond it gRPC answers RESOURCE_EXHAUSTED at once
    max_queue_size: int = 0  # 0: unbounded; requests waiting for an unbatched model's instances
    workers: int = 1  # processes sharing the port (SO_REUSEPORT), each with its own models and batchers
    # --- metrics ---
    metrics_port: int | None = None  # None: off; 0: any free port (printed)
    # --- REST ---
    http_port: int | None = None  # None: off; 0: any free port (printed); the h2 and aio stacks only
    # --- security ---
    tls_cert: Path | None = None  # PEM server certificate chain; with tls_key, serve TLS
    tls_key: Path | None = None
    tls_ca: Path | None = None  # PEM CA bundle: require client certificates signed by it (mutual TLS)
    auth_token: str = ""  # non-empty: every RPC needs "authorization: Bearer <token>"
    # --- lifecycle ---
    grace_s: float = 10.0  # SIGTERM: finish in-flight requests for at most this long
    # --- diagnostics ---
    profile_path: Path | None = None  # cProfile the serving thread; pstats written here on exit

    def __post_init__(self) -> None:
        if self.stack not in STACKS:
            raise ValueError(f"stack={self.stack!r} requested; must be one of {', '.join(STACKS)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} requested; must be in 0..65535")
        if not 0 < self.max_message_bytes <= INT32_MAX:
            raise ValueError(f"max_message_bytes={self.max_message_bytes} requested; must be in 1..{INT32_MAX}")
        if self.h2_limits != Limits() and self.stack != "h2":
            raise ValueError(f"--h2-limit applies to --grpc-stack h2, not {self.stack}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s={self.grace_s} requested; must be >= 0")
        if self.max_concurrent_rpcs < 0 or self.max_queue_size < 0:
            raise ValueError("max_concurrent_rpcs and max_queue_size must be >= 0 (0: unlimited)")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers} requested; must be >= 1")
        if self.http_port is not None and (not 0 <= self.http_port <= 65535 or self.stack == "sync"):
            raise ValueError(f"--http-port {self.http_port}: must be 0-65535, with the h2 or aio stack")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port={self.metrics_port} requested; must be in 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca (mutual TLS) needs tls_cert and tls_key")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # clients that enable keepalive must not be sent GOAWAY "too_many_pings"
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # several workers share one port only when asked; otherwise a second server on it is an error
            ("grpc.so_reuseport", 1 if self.workers > 1 else 0),
        ]
