"""What a scenario's window showed about the client and the host, beside the latency histograms.

``ScenarioEvidence`` is filled by the run (client CPU, the backlog at the window's end, the host probe's
window, send lag per second) and read twice: ``for_verdict()`` gives the attribution rules their plain numbers,
``to_dict()`` is the scenario's ``evidence`` in results.json (and the report's plots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tailmark.client.attribution import Evidence
from tailmark.client.host_probe import ProbeWindow


@dataclass(frozen=True, eq=False)
class ScenarioEvidence:
    client_cpu_pct: float | None = None  # client process CPU over the window, % of one core
    offered: int | None = None  # arrivals intended inside the window (open loop)
    unsent_at_end: int | None = None  # of those, not yet sent when the window's last intended instant passed
    held_by_cap: int = 0  # arrivals that waited for an in-flight slot
    duration_s: float = 0.0
    probe: ProbeWindow | None = None
    send_lag_p99_per_s_ms: Sequence[float] = ()  # the recorder's one-second intervals that held requests
    window_in_log_s: tuple[float, float] | None = None  # the measured window in latency.hlog's seconds
    stability: Mapping[str, Any] | None = None  # --stability-percentage: perf_analyzer's rule (client/stability.py)

    def for_verdict(self) -> Evidence:
        probe = self.probe
        return Evidence(
            client_cpu_pct=self.client_cpu_pct,
            offered=self.offered,
            unsent_at_end=self.unsent_at_end,
            held_by_cap=self.held_by_cap,
            probe_p99_ns=probe.lateness_ns(99.0) if probe is not None and probe.wakeups else None,
            probe_max_ns=probe.lateness.get_max_value() if probe is not None and probe.wakeups else None,
            client_wait_pct=probe.client_wait_pct if probe is not None else None,
            probe_held_pct=probe.held_pct if probe is not None and probe.wakeups else None,
        )

    @property
    def issued_rate_qps(self) -> float | None:
        """Arrivals the client sent inside the window, per second of it."""
        if self.offered is None or self.unsent_at_end is None or self.duration_s <= 0:
            return None
        return (self.offered - self.unsent_at_end) / self.duration_s

    def to_dict(self) -> dict[str, Any]:
        issued = self.issued_rate_qps
        return {
            "client_cpu_pct": None if self.client_cpu_pct is None else round(self.client_cpu_pct, 3),
            "offered": self.offered,
            "unsent_at_end": self.unsent_at_end,
            "issued_rate_qps": None if issued is None else round(issued, 3),
            "held_by_cap": self.held_by_cap,
            "send_lag_p99_per_s_ms": [round(v, 6) for v in self.send_lag_p99_per_s_ms],
            "host_probe": None if self.probe is None else self.probe.to_dict(),
            "window_in_log_s": None if self.window_in_log_s is None else [round(t, 6) for t in self.window_in_log_s],
            "stability": None if self.stability is None else dict(self.stability),
        }
