"""Per-model statistics with Triton's fields: counts, and durations in nanoseconds."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from copy import deepcopy
from dataclasses import dataclass, field

from tailmark.protos import inference_pb2 as pb


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStats:
    """Counters for one model version. Thread-safe: the sync gRPC stack records from many threads."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self._lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0  # batch elements
        self.execution_count = 0  # model executions
        self.success, self.fail, self.queue = Duration(), Duration(), Duration()
        self.compute_input, self.compute_infer, self.compute_output = Duration(), Duration(), Duration()
        self.batches: dict[int, BatchDurations] = defaultdict(BatchDurations)
        self.pending = 0  # requests admitted and not yet answered (queued or running)

    def snapshot(self) -> ModelStats:
        """A consistent copy, for readers that look at several fields (metrics)."""
        with self._lock:
            copy = ModelStats.__new__(ModelStats)
            state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
            copy.__dict__.update(deepcopy(state))
            copy._lock = threading.Lock()
            return copy

    def pending_changed(self, delta: int) -> None:
        with self._lock:
            self.pending += delta

    def try_enqueue(self, limit: int) -> bool:
        """Count one more pending request unless ``limit`` (0: none) are already pending."""
        with self._lock:
            if limit and self.pending >= limit:
                return False
            self.pending += 1
            return True

    def record_success(
        self, *, batch_size: int, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One request that ran as its own execution (no dynamic batching): both records, one lock."""
        with self._lock:
            self._execution(batch_size, input_ns, infer_ns, output_ns)
            self._request(total_ns, queue_ns, input_ns, infer_ns, output_ns)

    def record_execution(self, *, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One model execution of ``batch_size`` samples (a dynamic batch counts once)."""
        with self._lock:
            self._execution(batch_size, input_ns, infer_ns, output_ns)

    def _execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.inference_count += batch_size
        self.execution_count += 1
        batch = self.batches[batch_size]
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_request(self, *, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One successful request, with its share of time as Triton reports it (a batch's time counts
        in full for each of its requests)."""
        with self._lock:
            self._request(total_ns, queue_ns, input_ns, infer_ns, output_ns)

    def _request(self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def record_failure(self, total_ns: int) -> None:
        with self._lock:
            self.fail.add(total_ns)

    def to_proto(self) -> pb.ModelStatistics:
        def duration(d: Duration) -> pb.StatisticDuration:
            return pb.StatisticDuration(count=d.count, ns=d.ns)

        with self._lock:
            return pb.ModelStatistics(
                name=self.name,
                version=self.version,
                last_inference=self.last_inference_ms,
                inference_count=self.inference_count,
                execution_count=self.execution_count,
                inference_stats=pb.InferStatistics(
                    success=duration(self.success),
                    fail=duration(self.fail),
                    queue=duration(self.queue),
                    compute_input=duration(self.compute_input),
                    compute_infer=duration(self.compute_infer),
                    compute_output=duration(self.compute_output),
                    cache_hit=pb.StatisticDuration(),
                    cache_miss=pb.StatisticDuration(),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=size,
                        compute_input=duration(b.compute_input),
                        compute_infer=duration(b.compute_infer),
                        compute_output=duration(b.compute_output),
                    )
                    for size, b in sorted(self.batches.items())
                ],
            )
