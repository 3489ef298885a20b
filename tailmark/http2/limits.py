"""Every limit the HTTP/2 connection keeps, in one place, and a counter for each one hit.

The defaults are safe for a server on an untrusted network and roomy for gRPC clients (tritonclient,
grpc's C core, tailmark's own client): none of them is reached by a well-behaved peer. Each limit names the
attack it answers (the CVE numbers are the 2019 HTTP/2 denial-of-service family and 2023's rapid reset).
Over a limit the connection gives the RFC 9113 answer: a stream error (RST_STREAM) where only one stream is
at fault, otherwise GOAWAY, ENHANCE_YOUR_CALM where the peer is only being abusive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Limits:
    # --- what we advertise in SETTINGS ---
    max_concurrent_streams: int = 1000  # open streams the peer may start; beyond: REFUSED_STREAM
    initial_window: int = 4 << 20  # per stream: what the peer may send before we acknowledge it
    connection_window: int = 16 << 20  # all streams together
    max_frame_bytes: int = 1 << 20  # larger DATA frames mean fewer of them for big tensors
    max_header_list_bytes: int = 64 << 10  # a larger (decoded) list fails only its stream

    # --- header blocks, checked while they arrive and decode ---
    max_header_block_bytes: int = 256 << 10  # HEADERS + CONTINUATION bytes of one block; beyond: GOAWAY
    max_continuations: int = 64  # CONTINUATION frames in one block (CONTINUATION flood)
    max_header_fields: int = 1000  # fields in one block, counted before it is decoded; beyond: GOAWAY
    hard_header_list_bytes: int = 256 << 10  # decoding stops here (HPACK bomb); the table is lost: GOAWAY
    max_table_size_updates: int = 2  # per block, grpc's C core rule; beyond: COMPRESSION_ERROR

    # --- budgets against floods (a token bucket each: a burst, then a steady rate per second) ---
    reset_burst: int = 1000  # streams the peer resets within rapid_reset_s of opening them, and streams we
    reset_rate_per_s: float = 1000.0  # refuse or reset over its errors (rapid reset, CVE-2023-44487)
    rapid_reset_s: float = 0.1  # a reset later than this (a client's deadline or cancel) costs nothing
    empty_frame_burst: int = 1000  # frames that carry nothing: empty DATA / CONTINUATION, PRIORITY, unknown
    empty_frame_rate_per_s: float = 1000.0  # types (CVE-2019-9518, -9516)
    control_burst: int = 1000  # PING and SETTINGS frames, which each ask for an ack (CVE-2019-9512, -9515;
    control_rate_per_s: float = 100.0  # a SETTINGS may also touch every stream's window)

    # --- output the peer can make us hold ---
    max_control_backlog: int = 1000  # PING / SETTINGS acks queued while the peer does not read (9512, 9515)
    max_buffered_output: int = 16 << 20  # response bytes held for the peer (window or socket); beyond it we
    # stop crediting its connection window, so it cannot send more requests (CVE-2019-9517)
    max_stream_output: int = 4 << 20  # one stream's answers held for the peer before its handler is paused
    # --- input the peer can make us hold ---
    max_buffered_input: int = 256 << 20  # request bytes held for messages (and unary requests) not yet complete,
    # all streams of the connection together (their window is given back at once, a message may be larger than
    # it); the stream that goes past it is reset ENHANCE_YOUR_CALM. A single larger message needs a larger limit.
    write_timeout_s: float = 30.0  # output held with no progress this long: the connection is closed

    # --- time ---
    header_timeout_s: float = 10.0  # preface, or a header block started, not finished within this
    idle_timeout_s: float = 0.0  # 0: off; no open stream and no frame this long: GOAWAY NO_ERROR

    # --- fairness between connections ---
    frames_per_turn: int = 256  # frames handled per event-loop turn before other connections get theirs

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name}={getattr(self, field.name)} requested; must be >= 0")
        if not 16_384 <= self.max_frame_bytes <= (1 << 24) - 1:
            raise ValueError(f"max_frame_bytes={self.max_frame_bytes} requested; must be in 16384..16777215")
        if self.initial_window > 2**31 - 1 or self.connection_window > 2**31 - 1:
            raise ValueError("initial_window and connection_window must be < 2**31")
        if self.frames_per_turn < 1:
            raise ValueError(f"frames_per_turn={self.frames_per_turn} requested; must be >= 1")

    @classmethod
    def from_assignments(cls, assignments: Iterable[str]) -> Limits:
        """The defaults with ``NAME=VALUE`` overrides (``tailmark serve --h2-limit``); ValueError, one line, for
        an unknown name or a value that is not a number of the field's kind (or out of its range)."""
        kinds = {field.name: field.type for field in fields(cls)}
        values: dict[str, float] = {}
        for text in assignments:
            name, sep, value = text.partition("=")
            name = name.strip().replace("-", "_")
            if not sep:
                raise ValueError(f"--h2-limit {text!r}: expected NAME=VALUE")
            if name not in kinds:
                raise ValueError(f"--h2-limit {text!r}: no limit {name!r}; the limits are {', '.join(kinds)}")
            integer = kinds[name] == "int"
            try:
                values[name] = int(value) if integer else float(value)
            except ValueError:
                kind = "a whole number" if integer else "a number"
                raise ValueError(f"--h2-limit {text!r}: {name} takes {kind}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"--h2-limit: {exc}") from None


class LimitCounters:
    """How often each limit was hit on one connection (``as_dict`` for logs and tests)."""

    __slots__ = (
        "buffered_input",
        "buffered_output",
        "continuations",
        "control_backlog",
        "control_frames",
        "empty_frames",
        "flow_control",
        "header_block",
        "header_fields",
        "header_list",
        "refused_streams",
        "resets",
        "stream_output",
        "table_size_updates",
        "write_timeout",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name)}


class Budget:
    """A token bucket: ``burst`` events at once, refilled at ``rate_per_s``; ``spend()`` is False once empty."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, burst: int, rate_per_s: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate_per_s
        self._tokens = float(burst)
        self._last = now

    def spend(self, now: float, amount: float = 1.0) -> bool:
        tokens = self._tokens
        if tokens < amount:
            tokens = min(self._burst, tokens + (now - self._last) * self._rate)
            self._last = now
        if tokens < amount:
            self._tokens = tokens
            return False
        self._tokens = tokens - amount
        return True
