"""``tailmark trace``: gen, import, stats, transform, merge (usage in FORMAT.md and ``--help``)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tailmark.traces.format import UNITS, Record, TraceFormatError, check_class

Handler = Callable[[argparse.Namespace], int]

# generator name -> (help, [(flag, type, help, default or None if required)])
GEN_KINDS: dict[str, tuple[str, list[tuple[str, Any, str, Any]]]] = {
    "poisson": (
        "Poisson arrivals (exponential gaps, the first at 0); same --seed: what `run --scenario poisson` sends",
        [("--rate", float, "mean arrivals/s", None)],
    ),
    "fixed": ("one arrival every 1/rate s, the first at 0", [("--rate", float, "arrivals/s", None)]),
    "gamma": (
        "gamma gaps; CV = 1/sqrt(burstiness)",
        [
            ("--rate", float, "mean arrivals/s", None),
            ("--burstiness", float, "gamma shape: 1 Poisson, <1 burstier, >1 smoother", None),
        ],
    ),
    "batch": (
        "compound Poisson: batch events with random sizes",
        [
            ("--rate", float, "batch events/s", None),
            ("--sizes", str, "fixed:K | uniform:LO:HI | geometric:MEAN | 1:0.5,4:0.3,8:0.2", None),
        ],
    ),
    "onoff": (
        "on/off bursts (two-state MMPP)",
        [
            ("--rate-on", float, "arrivals/s while on", None),
            ("--rate-off", float, "arrivals/s while off", 0.0),
            ("--mean-on", float, "mean on period (s)", None),
            ("--mean-off", float, "mean off period (s)", None),
        ],
    ),
    "diurnal": (
        "Poisson with a sinusoidal rate",
        [
            ("--rate", float, "mean arrivals/s", None),
            ("--amplitude", float, "0..1 (0.5: rate swings ±50 %%)", None),
            ("--period", float, "period in s", 86400.0),
            ("--phase", float, "phase shift in s", 0.0),
        ],
    ),
    "ramp": (
        "Poisson with a ramping rate, then holding the end rate",
        [
            ("--start-rate", float, "arrivals/s at 0", None),
            ("--end-rate", float, "arrivals/s at the ramp's end", None),
            ("--ramp", float, "ramp length in s", None),
        ],
    ),
}


def _guarded(handler: Handler) -> Handler:
    """User mistakes (bad trace, bad parameter, unwritable file) become one-line UsageErrors."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from tailmark.cli import UsageError

        try:
            return handler(args)
        except (TraceFormatError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"{exc.filename or ''}: {exc.strerror}") from None

    return run


def _meta(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _write(args: argparse.Namespace, records: Iterator[Any], meta: dict[str, object]) -> int:
    from tailmark.traces.writer import write_trace

    n = write_trace(args.output, records, time_unit=args.unit, metadata={**meta, **_meta(args.meta)})
    print(f"wrote {n:,} arrivals to {args.output}")
    return 0


def _decorate(args: argparse.Namespace, records: Iterator[Any]) -> Iterator[Any]:
    from tailmark.traces import transforms

    if getattr(args, "traffic_class", None) is not None:
        records = transforms.relabel(records, check_class(args.traffic_class))
    if getattr(args, "deadline_ms", None):
        records = transforms.with_deadline(records, args.deadline_ms / 1000)
    return records


def _gen(args: argparse.Namespace) -> int:
    from tailmark.traces import generators as g
    from tailmark.traces.transforms import limit

    if not args.duration and not args.count:
        raise ValueError("give --duration or --count: generators are endless")
    seed = args.seed
    makers: dict[str, Callable[[], Iterator[Any]]] = {
        "poisson": lambda: g.poisson(args.rate, seed=seed),
        "fixed": lambda: g.fixed_interval(args.rate),
        "gamma": lambda: g.gamma(args.rate, args.burstiness, seed=seed),
        "batch": lambda: g.batch(args.rate, args.sizes, split=args.split, seed=seed),
        "onoff": lambda: g.onoff(args.rate_on, args.rate_off, args.mean_on, args.mean_off, seed=seed),
        "diurnal": lambda: g.diurnal(args.rate, args.amplitude, args.period, phase_s=args.phase, seed=seed),
        "ramp": lambda: g.ramp(args.start_rate, args.end_rate, args.ramp, shape=args.shape, seed=seed),
    }
    params = {k: v for k, v in vars(args).items() if k in args.param_names}
    records = _decorate(args, limit(makers[args.kind](), duration_s=args.duration, count=args.count))
    meta = {"generator": args.kind, "params": params, "seed": seed, "duration_s": args.duration, "count": args.count}
    return _write(args, records, meta)


def _import(args: argparse.Namespace) -> int:
    from tailmark.traces.importers import IMPORTERS

    kwargs: dict[str, Any] = {"skip_bad": args.skip_bad}
    if args.format not in ("pa-intervals", "azure-functions"):
        kwargs["sort"] = args.sort
    if args.format in ("burstgpt", "azure-functions") and args.class_by:
        kwargs["class_by"] = args.class_by
    elif args.class_by:
        raise ValueError(f"--class-by does not apply to {args.format}")
    if args.format == "azure-functions":
        kwargs.update(spread=args.spread, function=args.function, seed=args.seed)
    imported = IMPORTERS[args.format](args.input, **kwargs)
    meta = {"source": Path(args.input).name, "imported_from": args.format}
    rc = _write(args, _decorate(args, imported), meta)
    if imported.skipped:
        lines = ", ".join(str(n) for n in imported.skipped_lines if n)
        print(f"skipped {imported.skipped:,} malformed rows" + (f" (first at lines {lines})" if lines else ""))
    return rc


def _open(path: str, args: argparse.Namespace) -> Any:
    from tailmark.traces.reader import read_records

    return read_records(path, sort=getattr(args, "sort", False), skip_bad=getattr(args, "skip_bad", False))


def _stats(args: argparse.Namespace) -> int:
    from tailmark.traces.stats import format_stats, measure, plot_rate

    reader = _open(args.file, args)
    stats = measure(reader)
    if args.json:
        print(json.dumps({"trace": args.file, **stats.to_dict(), "skipped": reader.skipped}, indent=2))
    else:
        print(format_stats(stats, args.file))
        if reader.skipped:
            print(f"skipped         {reader.skipped:,} malformed rows")
    if not args.no_plot:
        png = Path(args.plot) if args.plot else Path(args.file).with_suffix(".rate.png")
        try:
            plot_rate(stats, png, title=Path(args.file).name)
        except ModuleNotFoundError:  # the client-only install has no matplotlib
            print("plot not written: matplotlib is not installed (pip install 'tailmark[plot]')", file=sys.stderr)
        except OSError as exc:
            print(f"plot not written: {png}: {exc.strerror}", file=sys.stderr)
        else:
            if not args.json:
                print(f"plot            {png}")
    return 0


def _transform(args: argparse.Namespace) -> int:
    from tailmark.traces import transforms as tr

    if args.speed and args.rate:
        raise ValueError("give --speed or --rate, not both")

    def pipeline() -> Iterator[Record]:
        if args.loop > 1:
            recs: Iterator[Record] = tr.loop(lambda: _shaped(), args.loop, period_s=args.period)
        else:
            recs = _shaped()
        return recs

    def _shaped() -> Iterator[Record]:
        recs: Iterator[Record] = _open(args.input, args)
        if args.cut:
            start, _, end = args.cut.partition(":")
            recs = tr.cut(recs, float(start or 0), float(end or 0))
        if args.thin < 1:
            recs = tr.thin(recs, args.thin, seed=args.seed)
        return recs

    factor = args.speed or 1.0
    if args.rate:
        from tailmark.traces.stats import measure

        mean = measure(pipeline()).mean_rate_qps  # first pass: the rate to scale from
        if not mean:
            raise ValueError("the trace has no mean rate (span 0) to scale from")
        factor = args.rate / mean
    recs = pipeline()
    if factor != 1.0:
        recs = tr.speed(recs, factor)
    # keep the input's metadata (a license travels with every cut of a trace)
    meta = {"source": Path(args.input).name, **_header_meta(args.input), "transform": _describe(args, factor)}
    return _write(args, _decorate(args, recs), meta)


def _header_meta(path: str) -> dict[str, object]:
    from tailmark.traces.format import FORMAT_NAME
    from tailmark.traces.reader import read_records

    reader = read_records(path)
    reader.close()
    meta = {k: v for k, v in reader.header.items() if k not in ("format", "version", "time_unit")}
    for comment in reader.comments:  # CSV: "# key: value"
        key, sep, value = comment.partition(": ")
        if sep and key != FORMAT_NAME:
            meta[key] = value
    return meta


def _describe(args: argparse.Namespace, factor: float) -> str:
    parts = []
    if args.cut:
        parts.append(f"cut {args.cut} s")
    if args.thin < 1:
        parts.append(f"thin {args.thin} seed {args.seed}")
    if args.loop > 1:
        parts.append(f"loop {args.loop}")
    if factor != 1.0:
        parts.append(f"speed x{factor:.6g}")
    return ", ".join(parts) or "copy"


def _merge(args: argparse.Namespace) -> int:
    from tailmark.traces.transforms import merge

    streams = []
    for spec in args.inputs:
        path, sep, cls = spec.partition("=")
        streams.append((check_class(cls) if sep else None, _open(path, args)))
    return _write(args, merge(streams), {"merged": args.inputs})


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="trace to write (.jsonl, or .csv for the CSV variant)")
    p.add_argument("--unit", choices=list(UNITS), default="ms", help="time unit of the written file (default ms)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="header metadata (repeatable)")
    p.add_argument("--class", dest="traffic_class", help="put every arrival in this traffic class")
    p.add_argument("--deadline-ms", type=float, help="per-request deadline budget in ms")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tailmark trace`` and its subcommands."""
    trace = subparsers.add_parser("trace", help="generate, import, inspect and transform arrival traces")
    sub = trace.add_subparsers(dest="trace_command", metavar="ACTION", required=True)

    gen = sub.add_parser("gen", help="generate a seeded synthetic trace")
    kinds = gen.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (help_text, params) in GEN_KINDS.items():
        p = kinds.add_parser(kind, help=help_text)
        for flag, typ, phelp, default in params:
            p.add_argument(flag, type=typ, required=default is None, default=default, help=phelp)
        if kind == "batch":
            p.add_argument("--split", action="store_true", help="send a batch as that many batch-1 requests")
        if kind == "ramp":
            p.add_argument("--shape", choices=["linear", "exponential"], default="linear")
        p.add_argument("--duration", type=float, default=0.0, help="seconds of arrivals")
        p.add_argument("--count", type=int, default=0, help="number of arrivals")
        p.add_argument("--seed", type=int, default=0)
        _add_output(p)
        names = [flag.lstrip("-").replace("-", "_") for flag, *_ in params] + ["split", "shape"]
        p.set_defaults(handler=_guarded(_gen), param_names=names)

    imp = sub.add_parser("import", help="convert a public trace format to a tailmark trace")
    imp.add_argument("input")
    imp.add_argument(
        "--format",
        required=True,
        choices=["azure-llm", "azure-functions", "mooncake", "burstgpt", "pa-intervals", "pa-schedule"],
    )
    imp.add_argument("--sort", action="store_true", help="sort rows by time instead of refusing unsorted input")
    imp.add_argument("--skip-bad", action="store_true", help="skip malformed rows (and report how many)")
    imp.add_argument("--class-by", help="burstgpt: model|log-type; azure-functions: trigger")
    imp.add_argument(
        "--spread",
        choices=["uniform", "poisson"],
        default="uniform",
        help="azure-functions: how a minute's invocations are placed",
    )
    imp.add_argument("--function", help="azure-functions: only this HashFunction")
    imp.add_argument("--seed", type=int, default=0)
    _add_output(imp)
    imp.set_defaults(handler=_guarded(_import))

    st = sub.add_parser("stats", help="count, rate, burstiness of a trace, and a rate plot")
    st.add_argument("file")
    st.add_argument("--plot", help="PNG path (default: FILE with .rate.png)")
    st.add_argument("--no-plot", action="store_true")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.add_argument("--sort", action="store_true")
    st.add_argument("--skip-bad", action="store_true")
    st.set_defaults(handler=_guarded(_stats))

    tf = sub.add_parser("transform", help="cut, thin, loop, then speed up / scale a trace (in that order)")
    tf.add_argument("input")
    tf.add_argument(
        "--cut", metavar="START:END", help="keep [START, END) seconds, rebased to 0 (END empty: to the end)"
    )
    tf.add_argument("--thin", type=float, default=1.0, metavar="P", help="keep each arrival with probability P")
    tf.add_argument("--seed", type=int, default=0)
    tf.add_argument("--loop", type=int, default=1, metavar="N", help="repeat N times")
    tf.add_argument("--period", type=float, default=0.0, help="loop period in s (default: inferred)")
    tf.add_argument("--speed", type=float, default=0.0, metavar="K", help="K times faster")
    tf.add_argument("--rate", type=float, default=0.0, metavar="QPS", help="scale to this mean rate")
    tf.add_argument("--sort", action="store_true")
    tf.add_argument("--skip-bad", action="store_true")
    _add_output(tf)
    tf.set_defaults(handler=_guarded(_transform))

    mg = sub.add_parser("merge", help="merge traces, each as a traffic class")
    mg.add_argument("inputs", nargs="+", metavar="FILE[=CLASS]")
    _add_output(mg)
    mg.set_defaults(handler=_guarded(_merge))
