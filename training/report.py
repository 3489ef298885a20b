"""Console lines for ``tailmark train``: one per finished run, then the set's summary. Nothing here measures."""

from __future__ import annotations

from tailmark.training.results import RunRecord, TrainResult


def format_run(record: RunRecord, runs: int) -> str:
    head = f"run {record.index + 1}/{runs}:"
    load = f"load {record.loadavg_start[0]:.1f}->{record.loadavg_end[0]:.1f}"
    usage = f"(wall {record.wall_s:.1f} s, cpu {record.cpu_s:.1f} s, {load}; checker {record.compliance})"
    if record.exit_code != 0:
        return f"{head} FAILED, exit status {record.exit_code} {usage}"
    if record.converged:
        return f"{head} converged at epoch {record.epochs} in {record.time_to_train_s:.2f} s {usage}"
    accuracy = "no evaluation" if record.accuracy is None else f"last accuracy {record.accuracy:.4f}"
    return f"{head} did NOT converge in {record.epochs} epochs, {accuracy} {usage}"


def format_summary(result: TrainResult, json_path: str) -> list[str]:
    score = result.score
    lines = [f"{result.workload} ({result.benchmark}, {result.metric} >= {result.target}, {result.division})"]
    if score is None or score.seconds is None:
        lines.append(f"  no time to train: {score.reason if score else 'no runs'}")
    else:
        verdict = "VALID" if score.valid else f"INVALID ({score.reason})"
        kind = "olympic mean" if score.valid else "mean of converged runs"
        lines.append(f"  time to train: {score.seconds:.2f} s = {score.minutes:.3f} min, {kind} of {score.runs} runs;")
        lines.append(f"  {score.converged}/{score.runs} converged; {verdict}")
    if result.rcp is not None:
        lines.append(f"  {result.rcp.message}")
    if result.served is not None:
        served = result.served
        routes = " --http-port 8000" if result.metric == "next_byte_acc" else ""  # lm: the OpenAI routes (docs/lm.md)
        lines.append(
            f"  served model: {served.repository}/{served.name} (run {served.run_index}, {result.metric}"
            f" {served.accuracy:.4f}); serve it with `tailmark serve --model-repository {served.repository}{routes}`"
        )
    lines.extend(f"  warning: {w}" for w in result.warnings)
    lines.append(f"  result: {json_path}")
    return lines
