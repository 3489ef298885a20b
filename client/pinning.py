"""CPU pinning for the built-in default: the server and the client on disjoint CPUs, where there are two or more.

A server and a load generator sharing cores measure each other: the server's compute delays the client's sends,
and the client's wake-ups steal the server's core. Benchmark labs pin them apart (taskset, cpusets); the built-in
default does the same, records it in results.json, and says so when it cannot (a single allowed CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Pinning:
    server: tuple[int, ...]
    client: tuple[int, ...]

    def pin_this_process(self) -> None:
        """Restrict this process (and the threads and children it starts from now on) to the client's CPUs."""
        os.sched_setaffinity(0, self.client)

    def to_dict(self) -> dict[str, Any]:
        return {"server_cpus": list(self.server), "client_cpus": list(self.client)}


def split_cpus(allowed: tuple[int, ...] | None = None) -> Pinning | None:
    """The client gets one CPU per four allowed (at least one, the highest-numbered), the server the rest.

    None when fewer than two CPUs are allowed or the platform cannot pin (then nothing is pinned).
    """
    if allowed is None:
        try:
            allowed = tuple(sorted(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return None
    if len(allowed) < 2:
        return None
    client_count = max(1, len(allowed) // 4)
    return Pinning(server=allowed[:-client_count], client=allowed[-client_count:])
