"""server/batching.py: Triton's dynamic-batching rules on a fake clock (no threads, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from tailmark.server.batching import BatchingPolicy, BatchQueue, Pending, QueuePolicy, shape_key
from tailmark.server.config import ConfigError, parse_config
from tailmark.server.errors import InvalidInput, Overloaded

MS = 1_000_000


def policy(dynamic_batching: str, max_batch_size: int = 8) -> BatchingPolicy:
    config = parse_config(
        f"""
name: "m" backend: "identity" max_batch_size: {max_batch_size}
input [ {{ name: "I" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "O" data_type: TYPE_FP32 dims: [ -1 ] }} ]
dynamic_batching {{ {dynamic_batching} }}
"""
    )
    result = BatchingPolicy.from_config(config)
    assert result is not None
    return result


def request(at_ms: float, rows: int = 1, width: int = 2, tag: int = 0) -> Pending:
    inputs = {"I": np.full((rows, width), tag, dtype=np.float32)}
    return Pending(inputs, rows, shape_key(inputs), int(at_ms * MS), waiter=tag)


def tags(batch: list[Pending]) -> list[int]:
    return [p.waiter for p in batch]


def test_no_delay_sends_whatever_is_queued_at_once():
    queue = BatchQueue(policy(""))
    for tag in range(3):
        queue.add(request(0, tag=tag))
    batch, wake = queue.next_batch(0)
    assert tags(batch) == [0, 1, 2] and wake is None
    assert len(queue) == 0
    assert queue.next_batch(0) == ([], None)


def test_queue_delay_holds_a_partial_batch_until_the_oldest_has_waited():
    queue = BatchQueue(policy("max_queue_delay_microseconds: 5000"))
    queue.add(request(0, tag=1))
    queue.add(request(2, tag=2))
    assert queue.next_batch(1 * MS) == ([], 5 * MS)
    assert queue.next_batch(4.9 * MS)[0] == []
    batch, _ = queue.next_batch(5 * MS)
    assert tags(batch) == [1, 2]


def test_a_full_batch_goes_before_the_delay_and_never_exceeds_max_batch_size():
    queue = BatchQueue(policy("max_queue_delay_microseconds: 100000", max_batch_size=4))
    for tag in range(6):
        queue.add(request(0, rows=1, tag=tag))
    batch, _ = queue.next_batch(0)
    assert tags(batch) == [0, 1, 2, 3]
    # a request of 3 rows does not fit beside the remaining 2: send the 2 now, the 3 later
    queue.add(request(0, rows=3, tag=9))
    batch, _ = queue.next_batch(0)
    assert tags(batch) == [4, 5]
    assert queue.next_batch(0) == ([], 100 * MS)


def test_largest_reachable_preferred_size_is_sent_at_once():
    queue = BatchQueue(policy("preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100000"))
    for tag in range(5):
        queue.add(request(0, tag=tag))
    batch, _ = queue.next_batch(0)
    assert tags(batch) == [0, 1, 2, 3]
    assert queue.next_batch(0) == ([], 100 * MS)  # 1 left: no preferred size, wait for the delay


def test_incompatible_shapes_are_not_concatenated_and_order_is_kept():
    queue = BatchQueue(policy("max_queue_delay_microseconds: 100000"))
    queue.add(request(0, width=2, tag=1))
    queue.add(request(0, width=2, tag=2))
    queue.add(request(0, width=3, tag=3))
    queue.add(request(0, width=2, tag=4))
    batch, _ = queue.next_batch(0)  # stops at the width-3 request and goes now
    assert tags(batch) == [1, 2]
    batch, _ = queue.next_batch(0)
    assert tags(batch) == [3]
    assert queue.next_batch(0)[0] == []  # tag 4 waits for the delay


def test_priority_levels_serve_the_highest_first():
    queue = BatchQueue(policy("priority_levels: 3 default_priority_level: 2", max_batch_size=2))
    queue.add(request(0, tag=20))  # default: level 2
    queue.add(request(0, tag=30), priority=3)
    queue.add(request(0, tag=10), priority=1)
    queue.add(request(0, tag=11), priority=1)
    assert tags(queue.next_batch(0)[0]) == [10, 11]
    assert tags(queue.next_batch(0)[0]) == [20, 30]
    with pytest.raises(InvalidInput, match=r"outside 1\.\.3"):
        queue.add(request(0), priority=4)


def test_max_queue_size_rejects_at_once_per_level():
    queue = BatchQueue(policy("priority_levels: 2 default_queue_policy { max_queue_size: 2 }"))
    queue.add(request(0))
    queue.add(request(0))
    with pytest.raises(Overloaded, match="maximum queue size"):
        queue.add(request(0))
    queue.add(request(0), priority=2)  # the other level has its own bound
    queue.next_batch(0)
    queue.add(request(0))  # taken requests free their places


def test_timeout_reject_returns_the_expired_and_drops_them():
    queue = BatchQueue(policy("default_queue_policy { timeout_action: REJECT allow_timeout_override: true }"))
    queue.add(request(0, tag=1), timeout_us=1000)
    queue.add(request(0, tag=2))
    assert queue.next_timeout_ns() == 1 * MS
    assert queue.expire(0.5 * MS) == []
    assert tags(queue.expire(1 * MS)) == [1]
    assert tags(queue.next_batch(1 * MS)[0]) == [2]
    assert len(queue) == 0


def test_timeout_delay_moves_the_request_behind_the_others():
    queue = BatchQueue(
        policy(
            "max_queue_delay_microseconds: 1 default_queue_policy { timeout_action: DELAY "
            "default_timeout_microseconds: 1000 }",
            max_batch_size=1,
        )
    )
    queue.add(request(0, tag=1))
    queue.add(request(1.5, tag=2))
    assert queue.expire(1.5 * MS) == []  # tag 1 timed out: delayed, not rejected
    assert tags(queue.next_batch(1.5 * MS)[0]) == [2]
    assert tags(queue.next_batch(1.5 * MS)[0]) == [1]


def test_request_timeout_may_only_shorten_the_default_when_overrides_are_allowed():
    assert QueuePolicy(default_timeout_ns=0).timeout_ns(500) == 500_000
    assert QueuePolicy(default_timeout_ns=1 * MS).timeout_ns(500) == 1 * MS
    assert QueuePolicy(default_timeout_ns=1 * MS, allow_timeout_override=True).timeout_ns(500) == 500_000
    assert QueuePolicy(default_timeout_ns=1 * MS, allow_timeout_override=True).timeout_ns(5000) == 1 * MS


def test_cancelled_requests_are_skipped():
    queue = BatchQueue(policy(""))
    first, second = request(0, tag=1), request(0, tag=2)
    queue.add(first)
    queue.add(second)
    assert queue.cancel(first)
    assert tags(queue.next_batch(0)[0]) == [2]
    assert not queue.cancel(second)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preferred_batch_size: [ 16 ]", "preferred_batch_size 16 is outside 1..8"),
        ("priority_levels: 2 default_priority_level: 3", "default_priority_level 3"),
        ("priority_levels: 2 priority_queue_policy { key: 5 value: { } }", "level 5"),
    ],
)
def test_bad_batching_config_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        policy(text)


def test_unbatched_models_have_no_policy():
    config = parse_config(
        'name: "m" backend: "identity" max_batch_size: 0 input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'output [ { name: "O" data_type: TYPE_FP32 dims: [ 1 ] } ] dynamic_batching { }'
    )
    assert BatchingPolicy.from_config(config) is None
