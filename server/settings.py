"""Server settings: one frozen dataclass, filled from flags by server/cli.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ServerSettings:
    # --- where ---
    model_repository: Path
    host: str = "127.0.0.1"
    port: int = 8001  # 0: any free port (the chosen one is printed)
    # --- gRPC ---
    # "sync" (thread pool, the default: 1.1x-2.1x the throughput of aio here, bench/server_stack.py)
    # or "aio" (grpc.aio on uvloop)
    stack: str = "sync"
    sync_threads: int = 8  # worker threads of the sync stack
    max_message_bytes: int = INT32_MAX  # gRPC's own default (4 MiB) breaks large tensors
    # --- lifecycle ---
    grace_s: float = 10.0  # SIGTERM: finish in-flight requests for at most this long

    def __post_init__(self) -> None:
        if self.stack not in ("aio", "sync"):
            raise ValueError(f"stack={self.stack!r} requested; must be 'aio' or 'sync'")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} requested; must be in 0..65535")
        if not 0 < self.max_message_bytes <= INT32_MAX:
            raise ValueError(f"max_message_bytes={self.max_message_bytes} requested; must be in 1..{INT32_MAX}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s={self.grace_s} requested; must be >= 0")

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # clients that enable keepalive must not be sent GOAWAY "too_many_pings"
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ]
