"""One arrival of a load schedule: the unit every schedule and trace reader yields.

Schedules are lazy iterators of ``Arrival``; nothing builds a list of them. ``offset_ns`` is the
intended send time relative to the start of the run (the dispatcher adds its own start instant).
``deadline_ns`` is a budget counted from that intended time, not an absolute instant, so replaying a
trace faster (``speed``) leaves it unchanged. The file format that carries these is ``FORMAT.md``.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_CLASS = "default"


class Arrival(NamedTuple):
    offset_ns: int  # intended send time, ns after the run's start
    traffic_class: str = DEFAULT_CLASS  # tail statistics are kept per class
    batch_size: int = 1  # samples in this request (leading dimension)
    sample_id: int = -1  # -1: the client picks a sample from its pool
    payload_size: int = 0  # 0: the model's own input shape; else elements of the variable dim
    deadline_ns: int = 0  # 0: no per-request deadline
    output_tokens: int = 0  # an LLM trace's generated tokens: a generative run asks for them (max_tokens); 0: none
