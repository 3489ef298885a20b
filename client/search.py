"""``tailmark search``: the highest Server-scenario rate that meets an SLO, with the evidence for every step.

The SLO is one or more percentiles of intended -> done (``--slo p99=50ms --slo p50=10ms``) or a goodput
(``--goodput 0.99 --request-slo 100ms``: at least 99 % of requests, failures counted as misses, done within
100 ms of their intended instant). Both are the same kind of statement, "a share f of the requests within T",
so each objective is judged the same way (docs/measurement.md, "Searches").

**A step** is one rate, judged in client/step_evidence.py (its evidence, corrected for the correlation of
queued requests, and whether it passes, blamed on the client or the host).

**The walk** (``walk``, pure, unit-tested with a fake step): from ``--start-qps`` double while steps pass
(capped at the client's calibrated ceiling), or halve while they fail, until a pass and a fail bracket the
answer; then bisect until the bracket [last pass, first fail] is narrower than ``--resolution`` of the last
pass; then run a confirmation step at the last pass with fresh seeds. A failed confirmation becomes the new
first fail and the walk goes on below it (twice at most). The answer is the confirmed last pass; its
uncertainty is the bracket widened by each step's Poisson rate noise, or the evidence band (highest rate shown
met .. lowest shown missed) where that is wider (``uncertainty``).

Example::

    tailmark search --target 127.0.0.1:8001 --model resnet --slo p99=50ms --resolution 5%
    tailmark search --target 127.0.0.1:8001 --model resnet --goodput 0.99 --request-slo 100ms --trials 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tailmark.client.slo import Objective, parse_duration_ms, parse_share, parse_slo
from tailmark.client.step_evidence import RULE, StepOutcome, judge_step, ms_text, step_batches

DEFAULT_TRIALS = 3
DEFAULT_START_QPS = 10.0
DEFAULT_RESOLUTION = 0.05
DEFAULT_STEP_S = 5.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_MAX_STEPS = 30
MAX_CONFIRMATIONS = 2


# --- the walk's resolution ---


@dataclass(frozen=True, slots=True)
class Resolution:
    relative: float = 0.0  # 0.05: the bracket narrower than 5 % of the last pass
    absolute_qps: float = 0.0  # or narrower than this many queries/s

    def reached(self, low: float, high: float) -> bool:
        return high - low <= (self.relative * low if self.relative else self.absolute_qps)

    def __str__(self) -> str:
        return f"{100 * self.relative:g}%" if self.relative else f"{self.absolute_qps:g}/s"


def parse_resolution(text: str) -> Resolution:
    """``5%`` (of the answer) or ``10`` / ``10/s`` (queries/s)."""
    body = text.strip()
    try:
        if body.endswith("%"):
            value = float(body[:-1]) / 100.0
            if 0.0 < value < 1.0:
                return Resolution(relative=value)
        else:
            value = float(body.removesuffix("/s"))
            if value > 0:
                return Resolution(absolute_qps=value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected a share of the answer (5%) or queries/s (10 or 10/s) > 0")


# --- the walk ---


@dataclass(frozen=True, slots=True)
class Walked:
    number: int
    phase: str  # bracket | bisect | confirm | retry (the same rate again after a step blamed on the host)
    rate_qps: float
    outcome: StepOutcome
    seconds: float = 0.0


@dataclass(slots=True)
class Walk:
    steps: list[Walked] = field(default_factory=list)
    last_pass_qps: float | None = None  # the answer
    first_fail_qps: float | None = None  # None: no step failed (the ceiling or the step limit came first)
    confirmed: bool = False
    stopped: str = ""  # why the walk ended before a confirmed answer at the resolution ("" when it did not)

    @property
    def answer_qps(self) -> float | None:
        return self.last_pass_qps

    @property
    def evidence_band_qps(self) -> tuple[float | None, float | None]:
        """Where the evidence, not the walk's resolution, places the answer: from the highest rate whose every
        objective the pooled trials showed met (at most the answer) to the lowest rate above it with an
        objective shown missed; None on a side no step showed. Steps between were decided by the majority of
        trials, which is why a short step's answer can land anywhere in the band."""
        met = [w.rate_qps for w in self.steps if w.outcome.objectives and w.rate_qps <= (self.last_pass_qps or 0.0)
               and all(e.shown == "met" for e in w.outcome.objectives)]  # fmt: skip
        missed = [w.rate_qps for w in self.steps if any(e.shown == "missed" for e in w.outcome.objectives)
                  and w.rate_qps > (self.last_pass_qps or 0.0)]  # fmt: skip
        return (max(met) if met else None), (min(missed) if missed else None)


def walk(
    step: Callable[[float, str, int], StepOutcome],
    *,
    start_qps: float,
    resolution: Resolution,
    ceiling_qps: float | None = None,
    min_qps: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    on_step: Callable[[Walk], None] | None = None,
) -> Walk:
    """Bracket, bisect and confirm; ``step(rate, phase, confirmation)`` runs one step (``confirmation``: 0 for
    the walk's own steps, n for the n-th confirmation, which must use fresh seeds). A step blamed on the client
    or the host ends the walk (the host's after one retry with fresh seeds: its noise comes and goes), as does
    ``max_steps``; the ceiling (which a step may report) caps every rate. ``on_step(walk)`` is called after
    every step with a copy of the walk so far (``so_far``), e.g. to keep search.json current."""
    result = Walk()
    floor = min_qps if min_qps is not None else start_qps / 64.0
    ceiling = [ceiling_qps]
    passes: list[float] = []

    def run(rate: float, phase: str, confirmation: int = 0) -> StepOutcome | None:
        if len(result.steps) >= max_steps:
            result.stopped = f"stopped after {max_steps} steps (--max-steps)"
            return None
        started = time.perf_counter()
        outcome = step(rate, phase, confirmation)
        result.steps.append(Walked(len(result.steps) + 1, phase, rate, outcome, time.perf_counter() - started))
        if on_step is not None:
            on_step(so_far(result))
        if outcome.ceiling_qps and not ceiling[0]:
            ceiling[0] = outcome.ceiling_qps
        if outcome.limited_by == "host" and phase != "retry":  # host noise comes and goes: one more try
            return run(rate, "retry", confirmation)
        if outcome.limited_by:
            result.stopped = (
                f"step {len(result.steps)} at {rate:g}/s: the {outcome.limited_by}, not the endpoint, limited the "
                f"result ({outcome.why}); the answer is at least the last pass"
                + (": give the client its own core or split the load over client processes"
                   if outcome.limited_by == "client" else ": use a quieter host, pin client and server apart")
            )  # fmt: skip
            return None
        return outcome

    low, high = None, None
    at_ceiling = ""
    rate = min(start_qps, ceiling[0]) if ceiling[0] else start_qps
    while low is None or high is None:
        outcome = run(rate, "bracket")
        if outcome is None:
            break
        if outcome.passed:
            low = rate
            passes.append(rate)
            if high is not None:
                break
            if ceiling[0] and rate >= ceiling[0]:
                at_ceiling = (
                    f"{rate:g}/s passed at the client's calibrated ceiling (~{ceiling[0]:g}/s): the endpoint takes "
                    "at least this; more client processes would be needed to find its limit"
                )
                break
            rate = min(2 * rate, ceiling[0]) if ceiling[0] else 2 * rate
        else:
            high = rate
            if low is not None:
                break
            rate /= 2
            if rate < floor:
                result.stopped = f"no rate down to {rate * 2:g}/s met the SLO"
                break
    confirmations = 0
    while not result.stopped and low is not None and (high is not None or at_ceiling):
        while high is not None and not resolution.reached(low, high):
            mid = (low + high) / 2
            outcome = run(mid, "bisect")
            if outcome is None:
                break
            if outcome.passed:
                low = mid
                passes.append(mid)
            else:
                high = mid
        if result.stopped:
            break
        confirmations += 1
        outcome = run(low, "confirm", confirmations)
        if outcome is None:
            break
        if outcome.passed:
            result.confirmed = True
            break
        high, failed = low, low  # a failed confirmation is the new first fail
        below = [p for p in passes if p < high]
        low = max(below) if below else None
        if confirmations >= MAX_CONFIRMATIONS or low is None:
            result.stopped = f"the confirmation at {failed:g}/s failed ({confirmations} tried)"
            break
    if at_ceiling and result.first_fail_qps is None and high is None:
        result.stopped = "; ".join(filter(None, (at_ceiling, result.stopped)))
    result.last_pass_qps, result.first_fail_qps = low, high
    return result


def so_far(result: Walk) -> Walk:
    """A copy of an unfinished walk with its bracket as the steps so far place it: the highest pass below the
    lowest fail, and that fail (steps the client or the host limited decide nothing)."""
    passed = [w.rate_qps for w in result.steps if w.outcome.passed]
    failed = [w.rate_qps for w in result.steps if not w.outcome.passed and not w.outcome.limited_by]
    low = max((p for p in passed if not failed or p < min(failed)), default=None)
    return replace(result, steps=list(result.steps), last_pass_qps=low, first_fail_qps=min(failed, default=None))


# --- outputs ---


def uncertainty(result: Walk, measured_s: float) -> tuple[float | None, float | None]:
    """The answer's uncertainty: the bracket [last pass, first fail] widened on each side by the 95 % range of the
    rate a Poisson schedule actually offers in ``measured_s`` seconds (a step's trials together), 1.96 sqrt(r / s)
    (at 50/s, one 5 s trial offers 44..56/s, so a step judges that wide a range of loads), and widened further
    to the evidence band where that is wider: the steps between the band's ends passed or failed by the
    majority of their trials, which a short step's luck decides (None: open on that side)."""
    low, high = result.last_pass_qps, result.first_fail_qps
    if low is None:
        return None, None

    def noise(rate: float) -> float:
        return 1.96 * math.sqrt(rate / measured_s)

    shown_met, shown_missed = result.evidence_band_qps
    low = None if shown_met is None else min(shown_met, max(low - noise(low), 0.0))
    high = None if high is None or shown_missed is None else max(shown_missed, high + noise(high))
    return low, high


def table(result: Walk, objectives: list[Objective], measured_s: float) -> str:
    head = ("step", "phase", "rate/s", "achieved/s", "trials", *(o.name for o in objectives), "result")
    rows = [head]
    for w in result.steps:
        o = w.outcome
        cells = []
        for e in o.objectives:
            if e.interval_ms is not None:
                lo, hi = (ms_text(v) for v in e.interval_ms)
                cells.append(f"{ms_text(e.pooled_value)} [{lo}..{hi}] p={e.p_value:.2g}")
            else:
                shown = "-" if e.pooled_value is None else f"{e.pooled_value:.4f}"
                cells.append(f"{shown} p={e.p_value:.2g}")
        cells += ["-"] * (len(objectives) - len(cells))  # a step whose run failed or was interrupted judged nothing
        verdict = "pass" if o.passed else (f"stop ({o.limited_by})" if o.limited_by else "fail")
        achieved = "-" if o.achieved_qps is None else f"{o.achieved_qps:.1f}"
        rows.append((str(w.number), w.phase, f"{w.rate_qps:g}", achieved, f"{o.trials_passed}/{o.trials}", *cells,
                     verdict))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(wd) for cell, wd in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines) + "\n\n" + answer_text(result, measured_s)


def answer_text(result: Walk, measured_s: float) -> str:
    if result.last_pass_qps is None:
        return f"answer: none ({result.stopped or 'no rate passed'})"
    high = "?" if result.first_fail_qps is None else f"{result.first_fail_qps:g}"
    text = f"answer: {result.last_pass_qps:g}/s (between the last pass and the first fail: [{result.last_pass_qps:g}, "
    text += f"{high}]/s), {'confirmed' if result.confirmed else 'NOT confirmed'}"
    spread = uncertainty(result, measured_s)
    ends = "..".join("?" if v is None else f"{v:.1f}" for v in spread)
    text += f"; uncertainty {ends}/s (the bracket with each step's Poisson rate noise, or the evidence band"
    band = result.evidence_band_qps
    text += " " + "..".join("?" if v is None else f"{v:g}" for v in band) + "/s, shown met .. shown missed)"
    if None in spread:  # say what would close it
        text += "; no step showed it on the ? side: longer steps (--duration) or more --trials show more"
    return text + (f"; {result.stopped}" if result.stopped else "")


def write_json(
    path: Path,
    result: Walk,
    objectives: list[Objective],
    settings: dict[str, Any],
    wall_s: float,
    measured_s: float,
    complete: bool = True,
) -> None:
    """search.json, atomically: after every step (``complete`` False: the walk so far) and at the end."""
    from tailmark.client.results import write_atomic

    doc = {
        "format": "tailmark.search/1",
        "complete": complete,  # False: the search was still walking, or was stopped (Ctrl-C) after these steps
        "objectives": [asdict(o) | {"name": o.name} for o in objectives],
        "rule": RULE,
        "settings": settings,
        "answer_qps": result.last_pass_qps,
        "bracket_qps": [result.last_pass_qps, result.first_fail_qps],  # the walk's resolution
        "uncertainty_qps": list(
            uncertainty(result, measured_s)
        ),  # the bracket and its rate noise, or the evidence band
        "evidence_band_qps": list(result.evidence_band_qps),  # the statistics' uncertainty (Walk.evidence_band_qps)
        "confirmed": result.confirmed,
        "stopped": result.stopped or None,
        "wall_s": round(wall_s, 1),
        "step_count": len(result.steps),
        "steps": [
            {
                "step": w.number,
                "phase": w.phase,
                "rate_qps": w.rate_qps,
                "seconds": round(w.seconds, 1),
                **asdict(w.outcome),
            }
            for w in result.steps
        ],
    }
    write_atomic(path, json.dumps(doc, indent=2) + "\n")


# --- the command ---


def register(subparsers, run_parser: argparse.ArgumentParser) -> None:
    """``tailmark search``: every flag of ``tailmark run`` (copied) but the load and the bound, plus its own."""
    from tailmark.client.sweep import copy_run_flags

    search = subparsers.add_parser(
        "search",
        help="the highest Server-scenario rate that meets an SLO (percentiles or goodput), step by step",
        description="Bracket (doubling from --start-qps), then bisect to --resolution, the Server scenario's "
        "rate; each step is --trials repeats with fresh seeds and passes when a majority of them meet the SLO "
        "and the pooled trials' confidence interval (goodput: binomial p-value) shows it; a confirmation step "
        "runs at the answer. Writes search.json and one run directory per step. Takes tailmark run's flags.",
    )
    own = {"--scenario", "--out", "--target-qps", "--latency-bound-ms", "--percentile", "--repeat", "--request-slo"}
    copy_run_flags(search, run_parser, own)
    search.add_argument("--slo", action="append", type=parse_slo, default=[], help="pP=BOUND, e.g. p99=50ms "
                        "(repeatable: every one must hold)")  # fmt: skip
    search.add_argument("--goodput", type=parse_share, help="share of requests within --request-slo, e.g. 0.99")
    search.add_argument(
        "--request-slo", type=parse_duration_ms, help="per-request latency bound of --goodput (each step's results "
        "report their goodput against it, as tailmark run --request-slo does)",
    )  # fmt: skip
    search.add_argument("--start-qps", type=float, default=DEFAULT_START_QPS, help="first rate (default 10)")
    search.add_argument(
        "--resolution", type=parse_resolution, default=Resolution(DEFAULT_RESOLUTION),
        help="stop bisecting when the bracket is this narrow: 5%% (of the answer, default) or 10/s",
    )  # fmt: skip
    search.add_argument(
        "--strict", action="store_true", help="a step passes only when a majority of trials meet the SLO AND the "
        "pooled interval shows it (default: the interval decides when it can, else the majority of trials)",
    )  # fmt: skip
    search.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="repeats per step (default 3)")
    search.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="give up after this many steps")
    search.add_argument("--out", type=Path, help="search directory (default runs/<time>-<model>-search)")
    search.set_defaults(handler=search_command)


def objectives_of(args: argparse.Namespace) -> list[Objective]:
    from tailmark.cli import UsageError

    if (args.goodput is None) != (args.request_slo is None):
        raise UsageError("--goodput and --request-slo go together: e.g. --goodput 0.99 --request-slo 100ms")
    objectives = list(args.slo)
    if args.goodput is not None:
        objectives.append(Objective(100.0 * args.goodput, args.request_slo, goodput=True))
    if not objectives:
        raise UsageError(
            "tailmark search needs an SLO: --slo p99=50ms (repeatable) or --goodput 0.99 --request-slo 100ms"
        )
    return objectives


def search_command(args: argparse.Namespace) -> int:
    from tailmark.cli import UsageError
    from tailmark.client import cli as run_cli
    from tailmark.client.settings import OFFICIAL_SAMPLE_SEED, OFFICIAL_SCHEDULE_SEED
    from tailmark.client.sweep import run_step

    if args.target is None:
        raise UsageError("tailmark search needs --target (start `tailmark serve` first for the built-in server)")
    objectives = objectives_of(args)
    for flag, value in (("--trials", args.trials), ("--max-steps", args.max_steps)):
        if value < 1:
            raise UsageError(f"{flag} {value}: must be >= 1")
    if args.start_qps <= 0:
        raise UsageError(f"--start-qps {args.start_qps:g}: must be > 0")
    if args.mlperf:
        raise UsageError("--mlperf: a search runs short steps; run the answer with tailmark run --mlperf after")
    out_dir = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model}-search"
    schedule_seed = OFFICIAL_SCHEDULE_SEED if args.seed is None else args.seed
    sample_seed = OFFICIAL_SAMPLE_SEED if args.sample_seed is None else args.sample_seed
    first = objectives[0]  # the runs' own verdicts judge this one (LoadGen's bound and early stopping)
    settings = {
        "target": args.target, "model": args.model, "trials": args.trials, "strict": args.strict,
        "start_qps": args.start_qps,
        "resolution": str(args.resolution), "step_s": args.duration or DEFAULT_STEP_S,
        "warmup_s": DEFAULT_WARMUP_S if args.warmup is None else args.warmup,
        "schedule_seed": schedule_seed, "sample_seed": sample_seed,
        "step_seeds": f"step n, trial k: the seeds + {args.trials} x (n - 1) + k - 1",
    }  # fmt: skip
    failure: list[int] = []
    started = time.perf_counter()
    counter = [0]

    def step(rate: float, phase: str, confirmation: int) -> StepOutcome:
        counter[0] += 1
        number = counter[0]
        step_args = argparse.Namespace(**vars(args))
        step_args.scenario = ["server"]
        step_args.target_qps = rate
        step_args.latency_bound_ms, step_args.percentile = first.bound_ms, first.percentile
        step_args.repeat = args.trials
        step_args.duration = settings["step_s"]
        step_args.warmup = settings["warmup_s"]
        # fresh seeds at every step: one schedule's luck (a sparse 4 s of Poisson arrivals) must not shift every
        # rate alike; measured: one seed offered 10 % under the target at every rate and moved the answer 10 %
        step_args.seed = schedule_seed + args.trials * (number - 1)
        step_args.sample_seed = sample_seed + args.trials * (number - 1)
        step_args.no_calibration = args.no_calibration or number > 1  # the client is calibrated once
        step_args.without_plots = True  # seconds a step (matplotlib); `tailmark report STEP_DIR` draws them
        step_dir = out_dir / f"step-{number:02d}-{phase}-{rate:g}"
        print(f"tailmark search: step {number} ({phase}): server at {rate:g}/s, {args.trials} trials",
              file=sys.stderr, flush=True)  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):  # each step's own table stays in its run directory
            code, doc = run_step(step_args, step_dir, f"tailmark search: step {number}")
        histograms = step_dir / "histograms.json"
        if code not in (0, run_cli.EXIT_INVALID) or doc is None or not doc["scenarios"] or not histograms.exists():
            failure.append(code or 1)
            return StepOutcome(False, limited_by="client", why=f"the step's run ended with exit code {code}",
                               run_dir=step_dir.name)  # fmt: skip
        outcome = judge_step(objectives, doc, json.loads(histograms.read_text(encoding="utf-8")),
                             batches=step_batches(step_dir, doc), strict=args.strict)  # fmt: skip
        outcome = StepOutcome(**{**{f: getattr(outcome, f) for f in outcome.__slots__}, "run_dir": step_dir.name})
        print(f"tailmark search: step {number}: {'pass' if outcome.passed else 'fail'}: {outcome.why}",
              file=sys.stderr, flush=True)  # fmt: skip
        return outcome

    measured_s = settings["step_s"] * args.trials
    walked: list[Walk] = []

    def keep(so_far: Walk) -> None:  # search.json after every step: a Ctrl-C keeps the steps walked so far
        walked[:] = [so_far]
        out_dir.mkdir(parents=True, exist_ok=True)
        so_far_s = time.perf_counter() - started
        write_json(out_dir / "search.json", so_far, objectives, settings, so_far_s, measured_s, complete=False)

    try:
        result = walk(step, start_qps=args.start_qps, resolution=args.resolution, max_steps=args.max_steps,
                      on_step=keep)  # fmt: skip
    except KeyboardInterrupt:  # between two steps' runs (a run's own Ctrl-C ends its step and the walk)
        if walked:
            walked[0].stopped = "interrupted by the user (SIGINT)"
            keep(walked[0])
            print(f"\ntailmark search: interrupted; the {len(walked[0].steps)} steps walked so far are in "
                  f"{out_dir}/search.json", file=sys.stderr)  # fmt: skip
        return run_cli.EXIT_INTERRUPTED
    wall_s = time.perf_counter() - started
    if failure and result.stopped.startswith("step"):
        result.stopped = f"a step's run failed (exit code {failure[0]}); see its run directory"
        if failure[0] == run_cli.EXIT_INTERRUPTED:
            result.stopped = f"interrupted by the user during step {len(result.steps)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    interrupted = bool(failure) and failure[0] == run_cli.EXIT_INTERRUPTED
    write_json(out_dir / "search.json", result, objectives, settings, wall_s, measured_s, complete=not interrupted)
    print()
    print(table(result, objectives, measured_s))
    print(f"{len(result.steps)} steps in {wall_s:.0f} s", file=sys.stderr)
    print(f"search: {out_dir}/search.json", file=sys.stderr)
    if failure:
        return failure[0]
    return 0 if result.last_pass_qps is not None else run_cli.EXIT_INVALID
