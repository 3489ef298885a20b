"""The stream state machine of RFC 9113 §5.1, and the per-stream bookkeeping of the sans-IO connection.

Only the states an endpoint without server push reaches: idle → open → half-closed (local or remote) →
closed. Each transition is a method that refuses a frame the state does not allow, with the error the RFC
names for it; the connection turns ``StreamError`` into RST_STREAM and ``ConnectionError`` into GOAWAY.

    idle ──HEADERS──▶ open ──END_STREAM received──▶ half-closed (remote) ──END_STREAM sent──▶ closed
                       └──END_STREAM sent──▶ half-closed (local) ──END_STREAM received──▶ closed
    any state ──RST_STREAM sent or received──▶ closed
"""

from __future__ import annotations

import enum
from collections import deque

from tailmark.http2 import frames


class State(enum.IntEnum):
    IDLE = 0
    OPEN = 1
    HALF_CLOSED_LOCAL = 2  # we sent END_STREAM; the peer may still send
    HALF_CLOSED_REMOTE = 3  # the peer sent END_STREAM; we may still send
    CLOSED = 4


# the members as module names: in Python 3.11 each ``State.OPEN`` is a slow lookup through the enum's
# metaclass, and the hot paths compare states several times per frame
IDLE, OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED = State


class ProtocolError(Exception):
    """A frame that breaks the protocol; ``code`` is the HTTP/2 error code of the answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(ProtocolError):
    """Only this stream is at fault: RST_STREAM with ``code``, the connection goes on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(code, message)
        self.stream_id = stream_id


class ConnectionError(ProtocolError):  # the RFC's name; it shadows the builtin only where imported
    """The connection is broken: GOAWAY with ``code``, then close."""


class Stream:
    """One stream: its state, both flow-control windows, and the output waiting for the peer's window.

    ``outbox`` holds DATA payload as chunks (bytes or memoryviews, never copied into one buffer); the first
    chunk is sent from ``outbox_offset`` on. ``trailers`` is a header block sent with END_STREAM once the
    outbox is empty; ``end_with_data`` puts END_STREAM on the last DATA frame instead.
    """

    __slots__ = (
        "end_with_data",
        "id",
        "opened_at",
        "outbox",
        "outbox_bytes",
        "outbox_offset",
        "recv_unacked",
        "recv_window",
        "reset_code",
        "send_window",
        "state",
        "trailers",
        "user",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.state = IDLE
        self.send_window = send_window  # what we may still send
        self.recv_window = recv_window  # what the peer may still send
        self.recv_unacked = 0  # taken by the application, not yet given back in a WINDOW_UPDATE
        self.outbox: deque | None = None  # made when output first has to wait
        self.outbox_offset = 0
        self.outbox_bytes = 0
        self.trailers: bytes | None = None
        self.end_with_data = False
        self.reset_code: int | None = None  # set once either side reset the stream
        self.user = None  # the application's object for this stream (a call)
        self.opened_at = 0.0  # the connection's clock when it opened

    # --- queries ---

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    @property
    def remote_open(self) -> bool:
        """The peer may still send HEADERS or DATA on it."""
        return self.state is OPEN or self.state is HALF_CLOSED_LOCAL

    @property
    def local_open(self) -> bool:
        """We may still send on it (and have not queued its end yet)."""
        return (self.state is OPEN or self.state is HALF_CLOSED_REMOTE) and not self.ending

    @property
    def ending(self) -> bool:
        """Its END_STREAM is queued behind the outbox."""
        return self.trailers is not None or self.end_with_data

    # --- transitions ---

    def open(self, end_stream: bool) -> None:
        """HEADERS opened it (sent by either side)."""
        self.state = HALF_CLOSED_REMOTE if end_stream else OPEN

    def receive_headers(self, end_stream: bool) -> None:
        """A later header block from the peer: response headers, or trailers (which must end the stream)."""
        state = self.state
        if state is not OPEN and state is not HALF_CLOSED_LOCAL:
            raise StreamError(self.id, frames.STREAM_CLOSED, f"HEADERS on half-closed stream {self.id}")
        if end_stream:  # received_end(), written out: this runs for every header block
            self.state = HALF_CLOSED_REMOTE if state is OPEN else CLOSED

    def receive_data(self, size: int, end_stream: bool) -> None:
        state = self.state
        if state is not OPEN and state is not HALF_CLOSED_LOCAL:
            raise StreamError(self.id, frames.STREAM_CLOSED, f"DATA on closed stream {self.id}")
        if size > self.recv_window:
            raise StreamError(
                self.id, frames.FLOW_CONTROL_ERROR, f"{size} bytes of DATA past a window of {self.recv_window}"
            )
        self.recv_window -= size
        if end_stream:
            self.state = HALF_CLOSED_REMOTE if state is OPEN else CLOSED

    def received_end(self) -> None:
        self.state = HALF_CLOSED_REMOTE if self.state is OPEN else CLOSED

    def sent_end(self) -> None:
        self.state = HALF_CLOSED_LOCAL if self.state is OPEN else CLOSED

    def reset(self, code: int) -> None:
        """Closed by RST_STREAM (either way): what was waiting to be sent is dropped."""
        self.state = CLOSED
        self.reset_code = code
        self.drop_output()

    def drop_output(self) -> None:
        self.outbox = None
        self.outbox_offset = self.outbox_bytes = 0
        self.trailers = None
        self.end_with_data = False
