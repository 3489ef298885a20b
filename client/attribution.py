"""Who limited a result: the client, the host, or the endpoint. The rule is written out in docs/verdicts.md.

LoadGen's checks (duration, count, early stopping, the latency bound) are applied unchanged in ``verdict.py``.
This module only decides whether the *client* may be blamed, and names the cause the evidence supports:

- **client-bound** (a failing ``client_bound`` check) only when the client demonstrably limited the result:
  its CPU saturated; or it did not issue the offered load (a backlog of requests intended inside the window was
  still unsent when the window ended); or the verdict hinges on its own lag (the bound fails on intended→done but
  passes on sent→done) and the host probe did not see the same lateness.
- **host-noisy** (a failing ``host_noise`` check): the same failures, but while the client was not busy either
  the host-noise probe, sleeping on the client's own CPUs in a process of its own, woke comparably late, or the
  client's event loop spent a share of the window runnable but waiting for a CPU that other work held. The
  lateness is the host's (idle CPUs waking slowly, neighbours, steal), and the advice is about the host.
- Lag that arrivals spent waiting for an in-flight slot (``--max-outstanding``) is the endpoint's delay queued in
  the client (coordinated omission made visible), never the client's fault.
- When the bound fails from the actual send too but the host demonstrably delayed the client (the host test
  above, with a send lag over its bound), the client's receive timestamps are as suspect as its sends: the result
  is **host-noisy**, not the endpoint's.
- An open-loop scenario without a bound reports only its latencies: when the host test explains a send lag over
  its bound there, the numbers describe the host as much as the endpoint, and the result is **host-noisy**.
- Send lag that does not decide the verdict (the bound is met with the lag counted in, or there is no bound and
  the host did not cause it) is a warning with its figures, never a failure: it only made the result harder.

Every rule here reads plain numbers, so it is unit-tested on synthetic evidence (tests/client/test_attribution.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from tailmark.client.check import Check

BACKLOG_SHARE = 0.01  # unsent at the window's end, as a share of the offered arrivals: beyond an end effect
QUIET_CLIENT_CPU_PCT = 50.0  # below this the client leaves its core idle most of the time
HOST_EXPLAINS_SHARE = 0.5  # the probe's p99 lateness is at least this share of the client's p99 send lag
HOST_WAIT_PCT = 2.0  # the client's loop waited for a CPU (other work ran) at least this share of the window
# the host held the probe more than a period late this share of the window: Poisson sends land in stalls in
# proportion to their time, so ~1 % of them late needs about this much (measured on this project's VM: 0.33 % held
# with send-lag p99 0.6 ms, 4.3 % with 9.3 ms while the probe's p99 said 3.5 ms)
HOST_HELD_PCT = 0.5

HOST_ADVICE = (
    "The host, not the client, made it late (slow wake-ups, or other work on the client's CPUs): pin the client and "
    "the server to separate cores (taskset, or the built-in default's pinning), use a quieter host or a dedicated VM, "
    "run longer, and repeat"
)
CLIENT_LAG_ADVICE = (
    "The client's own event loop sent late while the host woke on time: look for work on the client's loop "
    "(input building, GC, other tasks), pin it to a core of its own, or split the load over client processes"
)
CLIENT_CPU_ADVICE = "Give the client more or faster cores, or split the load over client processes"
BACKLOG_ADVICE = "Lower the target QPS for one client process, or split the load over client processes"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the client and the host showed over one scenario's measured window. None: not measured."""

    client_cpu_pct: float | None = None  # client process CPU, % of one core
    offered: int | None = None  # arrivals intended inside the window
    unsent_at_end: int | None = None  # of those, still unsent when the window's last intended instant passed
    held_by_cap: int = 0  # arrivals that waited for an in-flight slot (--max-outstanding): the endpoint's delay
    probe_p99_ns: int | None = None  # the host probe's wake-up lateness on the client's CPUs
    probe_max_ns: int | None = None
    client_wait_pct: float | None = None  # the client's loop thread runnable but not running, % of the window
    probe_held_pct: float | None = None  # the probe held more than a period late, % of the window (time-weighted)


@dataclass(frozen=True, slots=True)
class LagFacts:
    """The send lag and what it did to the latency checks (nanoseconds)."""

    lag_p99_ns: int
    lag_bound_ns: int
    decides: bool  # the latency checks fail on intended->done, pass on sent->done, and no in-flight cap queued them
    sent_p_ns: int | None = None  # the bound's percentile of sent->done, when there is a bound
    percentile: float = 99.0
    bound_failed: bool = False  # the latency checks fail on intended->done
    has_bound: bool = True  # False: an open-loop scenario that only reports its latencies


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


def _probe_text(e: Evidence) -> str:
    if e.probe_p99_ns is None:
        text = "no host probe"
    else:
        text = f"host probe woke late p99 {_ms(e.probe_p99_ns)}"
        text += f", max {_ms(e.probe_max_ns)}" if e.probe_max_ns is not None else ""
    if e.probe_held_pct:
        text += f"; held it over a period late {e.probe_held_pct:.2f} % of the window"
    if e.client_wait_pct is not None:
        text += f"; client waited for a CPU {e.client_wait_pct:.1f} % of the window"
    return text


def _host_cause(e: Evidence, lag_ns: int) -> str:
    if e.probe_p99_ns is not None and e.probe_p99_ns >= HOST_EXPLAINS_SHARE * lag_ns:
        return "the host woke late too"
    if e.probe_held_pct is not None and e.probe_held_pct >= HOST_HELD_PCT:
        return "the host held the probe late too"
    return "other work held the client's CPU"


def _host_explains(e: Evidence, lag_ns: int) -> bool:
    """While the client was not busy, the probe woke comparably late, was held late long enough, or other work held
    the client's CPU."""
    if e.client_cpu_pct is None or e.client_cpu_pct >= QUIET_CLIENT_CPU_PCT:
        return False
    probe_saw = e.probe_p99_ns is not None and e.probe_p99_ns >= HOST_EXPLAINS_SHARE * lag_ns
    crowded = e.client_wait_pct is not None and e.client_wait_pct >= HOST_WAIT_PCT
    held = e.probe_held_pct is not None and e.probe_held_pct >= HOST_HELD_PCT
    return probe_saw or crowded or held


def cap_explains(e: Evidence) -> bool:
    """Enough arrivals waited for an in-flight slot to make the p99 send lag: the endpoint's delay, queued."""
    return e.held_by_cap > BACKLOG_SHARE * (e.offered or 0)


def backlog(e: Evidence) -> int | None:
    """Requests the client failed to issue in time beyond an end effect; None when it kept up (or unknown)."""
    if e.offered is None or e.unsent_at_end is None or cap_explains(e):
        return None
    return e.unsent_at_end if e.unsent_at_end > max(2, BACKLOG_SHARE * e.offered) else None


def attribute(e: Evidence, cpu_bound_pct: float, lag: LagFacts | None) -> tuple[list[Check], list[str]]:
    """The client/host checks of one result and the warnings that go with them.

    ``lag`` is None for closed-loop and Offline scenarios (intended = sent, or everything intended at 0).
    """
    checks: list[Check] = []
    notes: list[str] = []
    cpu = e.client_cpu_pct
    cpu_text = "client CPU not measured" if cpu is None else f"client CPU {cpu:.0f} % (bound {cpu_bound_pct:g} %)"
    facts = [cpu_text]
    if lag is not None:
        facts.append(f"send lag p99 {_ms(lag.lag_p99_ns)}")
        if e.offered is not None and e.unsent_at_end is not None:
            facts.append(f"{e.unsent_at_end} of {e.offered} unsent at the window's end")
        facts.append(_probe_text(e))
    detail = "; ".join(facts)

    saturated = cpu is not None and cpu >= cpu_bound_pct
    behind = backlog(e) if lag is not None else None
    if saturated:
        checks.append(Check("client_bound", False, f"client-bound (CPU saturated): {detail}", CLIENT_CPU_ADVICE))
        return checks, notes
    if lag is None:
        checks.append(Check("client_bound", True, detail))
        return checks, notes

    host = _host_explains(e, lag.lag_p99_ns)
    if behind is not None:
        what = f"did not issue the offered load ({behind} requests still unsent at the window's end)"
        if host:
            checks.append(Check("client_bound", True, detail))
            checks.append(Check("host_noise", False, f"host-noisy: the client {what}; {detail}", HOST_ADVICE))
        else:
            checks.append(Check("client_bound", False, f"client-bound ({what}): {detail}", BACKLOG_ADVICE))
        return checks, notes
    if lag.decides:
        what = f"the bound fails only by the send lag (sent->done p{lag.percentile:g} {_ms(lag.sent_p_ns or 0)})"
        if host:
            checks.append(Check("client_bound", True, detail))
            checks.append(Check("host_noise", False, f"host-noisy: {what}; {detail}", HOST_ADVICE))
        else:
            checks.append(Check("client_bound", False, f"client-bound (sends late): {what}; {detail}",
                                CLIENT_LAG_ADVICE))  # fmt: skip
        return checks, notes

    late = lag.lag_p99_ns > lag.lag_bound_ns
    if lag.bound_failed and late and host and not cap_explains(e):
        # the host kept the client from running: its receive stamps are as late as its sends, so sent->done
        # cannot clear or convict the endpoint either
        what = "the host delayed the client's sends and so, very likely, its receive timestamps too"
        checks.append(Check("client_bound", True, detail))
        checks.append(Check("host_noise", False, f"host-noisy: {what}; {detail}", HOST_ADVICE))
        return checks, notes

    if not lag.has_bound and late and host and not cap_explains(e):
        # nothing to pass or fail but the latencies themselves, and the host moved them
        what = "the host delayed the client, so the latencies reported describe the host as much as the endpoint"
        checks.append(Check("client_bound", True, detail))
        checks.append(Check("host_noise", False, f"host-noisy: {what}; {detail}", HOST_ADVICE))
        return checks, notes

    checks.append(Check("client_bound", True, detail))
    if late:
        cause = _host_cause(e, lag.lag_p99_ns) if host else "not explained by the host probe"
        if cap_explains(e):
            cause = f"{e.held_by_cap} requests waited for an in-flight slot (--max-outstanding): the endpoint's delay"
        notes.append(
            f"send lag p99 {_ms(lag.lag_p99_ns)} > {_ms(lag.lag_bound_ns)} ({cause}; {_probe_text(e)}); it is counted "
            "in intended->done and did not decide the verdict"
        )
    return checks, notes


def host_note(e: Evidence, lag_bound_ns: int) -> str | None:
    """A warning when the probe saw the host wake late, whatever the verdict (the endpoint shares the host)."""
    if e.probe_p99_ns is None or e.probe_p99_ns <= lag_bound_ns:
        return None
    return (
        f"noisy host: the probe on the client's CPUs woke late p99 {_ms(e.probe_p99_ns)}"
        + (f" (max {_ms(e.probe_max_ns)})" if e.probe_max_ns is not None else "")
        + "; tails on this host may be noise: pin cores, run longer, repeat"
    )
