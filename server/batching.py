"""Triton's dynamic-batching policy as a plain data structure: no threads, no event loop, no clock.

``BatchQueue`` holds the requests waiting for a model and decides, given "now", which of them form the
next batch. The driver in server/batcher.py (the model's instance threads) owns the clock, the locking
and the execution; this module only implements the rules, so both stacks batch the same way:

- Requests wait in one queue per priority level (1 is the highest; request parameter ``priority``, 0 or
  absent meaning ``default_priority_level``). Each level has its queue policy: ``max_queue_size``
  (0: unbounded) rejects at once, and a timeout (``default_timeout_microseconds``, or the request's
  ``timeout`` parameter in µs) either REJECTs the request or DELAYs it behind the level's others.
  A request may shorten the default timeout only when ``allow_timeout_override`` is set; it may set one
  when the level has none.
- A batch is taken from the head of the highest-priority queue onwards. It never exceeds
  ``max_batch_size`` samples, and it stops at the first request whose non-batch dimensions differ from
  the first's (such tensors cannot be concatenated). It is sent at once when it is full, when it stopped
  at an incompatible request, when it reaches a preferred size (the largest reachable one is taken),
  or when its oldest request has waited ``max_queue_delay_microseconds``; otherwise the driver waits.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.config import ConfigError
from tailmark.server.errors import InvalidInput, Overloaded

REJECT = mc.ModelQueuePolicy.REJECT
DELAY = mc.ModelQueuePolicy.DELAY


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    timeout_action: int = REJECT
    default_timeout_ns: int = 0  # 0: no timeout
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0: unbounded

    @classmethod
    def from_proto(cls, policy: mc.ModelQueuePolicy) -> QueuePolicy:
        return cls(
            timeout_action=policy.timeout_action,
            default_timeout_ns=policy.default_timeout_microseconds * 1000,
            allow_timeout_override=policy.allow_timeout_override,
            max_queue_size=policy.max_queue_size,
        )

    def timeout_ns(self, requested_us: int) -> int:
        """The timeout a request gets: the default, or the request's where the policy lets it choose."""
        requested = requested_us * 1000
        if requested <= 0:
            return self.default_timeout_ns
        if self.default_timeout_ns == 0:
            return requested
        if self.allow_timeout_override:
            return min(requested, self.default_timeout_ns)
        return self.default_timeout_ns


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """A model's ``dynamic_batching`` block, checked, in the units the batcher uses."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0
    priority_levels: int = 1
    default_priority: int = 1
    queue_policies: tuple[QueuePolicy, ...] = (QueuePolicy(),)  # index: level - 1

    @classmethod
    def from_config(cls, config: mc.ModelConfig, *, source: str = "config.pbtxt") -> BatchingPolicy | None:
        """The policy for a batched model, None when the model is not dynamically batched."""
        if config.WhichOneof("scheduling_choice") != "dynamic_batching" or config.max_batch_size <= 0:
            return None
        batching = config.dynamic_batching
        preferred = tuple(sorted(set(batching.preferred_batch_size)))
        for size in preferred:
            if not 1 <= size <= config.max_batch_size:
                raise ConfigError(
                    f"{source}: preferred_batch_size {size} is outside 1..{config.max_batch_size} (max_batch_size)"
                )
        levels = max(1, batching.priority_levels)
        default_level = batching.default_priority_level or 1
        if batching.priority_levels and not 1 <= default_level <= levels:
            raise ConfigError(f"{source}: default_priority_level {default_level} is outside 1..{levels}")
        for level in batching.priority_queue_policy:
            if not 1 <= level <= levels:
                raise ConfigError(f"{source}: priority_queue_policy for level {level}, outside 1..{levels}")
        default = QueuePolicy.from_proto(batching.default_queue_policy)
        policies = tuple(
            QueuePolicy.from_proto(batching.priority_queue_policy[level])
            if level in batching.priority_queue_policy
            else default
            for level in range(1, levels + 1)
        )
        return cls(
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=preferred,
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
            priority_levels=levels,
            default_priority=default_level,
            queue_policies=policies,
        )

    def level_of(self, priority: int) -> int:
        if priority == 0:
            return self.default_priority
        if not 1 <= priority <= self.priority_levels:
            raise InvalidInput(f"priority {priority} is outside 1..{self.priority_levels} (priority_levels)")
        return priority


class State(Enum):
    QUEUED = 1
    DELAYED = 2  # timed out under DELAY: still queued, behind the level's on-time requests
    TAKEN = 3  # in a batch, rejected, or cancelled


@dataclass(eq=False, slots=True)
class Pending:
    """One request in the queue. ``waiter`` is the driver's (a future); the queue never touches it."""

    inputs: dict[str, Any]
    batch_size: int
    shape_key: tuple  # requests batch together only when these are equal
    enqueue_ns: int
    waiter: Any = None
    level: int = 1
    deadline_ns: int = 0  # 0: none
    state: State = State.QUEUED
    seq: int = field(default=0)


def shape_key(inputs: dict[str, Any]) -> tuple:
    """Every input's name, dtype and shape past the batch dimension."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items())


class BatchQueue:
    """The waiting requests of one model and the rules that cut batches from them. Not thread-safe."""

    def __init__(self, policy: BatchingPolicy) -> None:
        self.policy = policy
        levels = policy.priority_levels
        self._queued: list[deque[Pending]] = [deque() for _ in range(levels)]
        self._delayed: list[deque[Pending]] = [deque() for _ in range(levels)]
        self._sizes = [0] * levels  # live requests per level (queued + delayed)
        self._deadlines: list[tuple[int, int, Pending]] = []  # heap of (deadline, seq, request)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(self._sizes)

    def add(self, pending: Pending, *, priority: int = 0, timeout_us: int = 0) -> None:
        """Queue a request, or raise Overloaded (queue full) / InvalidInput (bad priority) at once."""
        level = self.policy.level_of(priority)
        queue_policy = self.policy.queue_policies[level - 1]
        if queue_policy.max_queue_size and self._sizes[level - 1] >= queue_policy.max_queue_size:
            raise Overloaded(f"exceeds maximum queue size ({queue_policy.max_queue_size}) at priority level {level}")
        pending.level, pending.seq = level, next(self._seq)
        timeout_ns = queue_policy.timeout_ns(timeout_us)
        if timeout_ns:
            pending.deadline_ns = pending.enqueue_ns + timeout_ns
            heapq.heappush(self._deadlines, (pending.deadline_ns, pending.seq, pending))
        self._queued[level - 1].append(pending)
        self._sizes[level - 1] += 1

    def expire(self, now_ns: int) -> list[Pending]:
        """Apply timeouts: returns the REJECTed requests (the driver fails them); DELAYed ones move back."""
        rejected = []
        while self._deadlines and self._deadlines[0][0] <= now_ns:
            _, _, pending = heapq.heappop(self._deadlines)
            if pending.state is not State.QUEUED:
                continue
            level = pending.level - 1
            if self.policy.queue_policies[level].timeout_action == DELAY:
                pending.state = State.DELAYED
                self._delayed[level].append(pending)
            else:
                pending.state = State.TAKEN
                self._sizes[level] -= 1
                rejected.append(pending)
        return rejected

    def next_timeout_ns(self) -> int | None:
        while self._deadlines and self._deadlines[0][2].state is not State.QUEUED:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def cancel(self, pending: Pending) -> bool:
        """Forget a request whose caller went away (its entry is skipped from now on); False if too late."""
        if pending.state is State.TAKEN:
            return False
        pending.state = State.TAKEN
        self._sizes[pending.level - 1] -= 1
        return True

    def _live(self) -> Iterator[tuple[deque[Pending], Pending]]:
        """Requests in service order: by level, on-time before delayed, oldest first; drops dead heads."""
        for level in range(self.policy.priority_levels):
            for queue, state in ((self._queued[level], State.QUEUED), (self._delayed[level], State.DELAYED)):
                while queue and queue[0].state is not state:
                    queue.popleft()
                for pending in queue:
                    if pending.state is state:
                        yield queue, pending

    def next_batch(self, now_ns: int) -> tuple[list[Pending], int | None]:
        """(the batch to run now, []) or ([], when to look again in ns; None: on the next arrival)."""
        policy = self.policy
        chosen: list[tuple[deque[Pending], Pending]] = []
        total, best_preferred, send_now = 0, 0, False
        for queue, pending in self._live():
            if total + pending.batch_size > policy.max_batch_size or (
                chosen and pending.shape_key != chosen[0][1].shape_key
            ):
                send_now = True
                break
            chosen.append((queue, pending))
            total += pending.batch_size
            if total in policy.preferred_batch_sizes:
                best_preferred = len(chosen)
            if total == policy.max_batch_size:
                send_now = True
                break
        if not chosen:
            return [], self.next_timeout_ns()
        oldest = min(pending.enqueue_ns for _, pending in chosen)
        due_ns = oldest + policy.max_queue_delay_ns
        if not send_now and best_preferred:
            chosen = chosen[:best_preferred]
        elif not send_now and now_ns < due_ns:
            timeout = self.next_timeout_ns()
            return [], due_ns if timeout is None else min(due_ns, timeout)
        batch = []
        for _, pending in chosen:
            pending.state = State.TAKEN
            self._sizes[pending.level - 1] -= 1
            batch.append(pending)
        # chosen entries are the live heads of their queues in order: popping dead heads removes them
        for queue, _ in chosen:
            while queue and queue[0].state is State.TAKEN:
                queue.popleft()
        return batch, None
