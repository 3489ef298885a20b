"""What the sans-IO connection reports from ``receive_data``: one small object per thing the application acts on.

Each event carries the ``Stream`` it is about (``stream_state.Stream``), so the application can see whether
a later frame in the same batch has already reset it (``event.stream.closed``) before it does any work.
"""

from __future__ import annotations

from tailmark.http2.stream_state import Stream


class Event:
    __slots__ = ()


class _HeaderBlock(Event):
    """A complete header block on a stream. ``error`` says why its stream must fail (its decoded header list
    was over the limit; ``headers`` is then empty), else None."""

    __slots__ = ("end_stream", "error", "headers", "stream")

    def __init__(self, stream: Stream, headers: dict[str, str], end_stream: bool, error: str | None) -> None:
        self.stream = stream
        self.headers = headers
        self.end_stream = end_stream
        self.error = error


class RequestReceived(_HeaderBlock):
    """The peer opened a stream with this block (server side)."""

    __slots__ = ()


class HeadersReceived(_HeaderBlock):
    """A header block on a stream that was already open: response headers (client side) or trailers."""

    __slots__ = ()


class DataReceived(Event):
    """DATA content (padding removed). ``flow_size`` is what it cost the windows (padding included): give it
    back with ``acknowledge_stream`` when the application has taken it; the connection window is credited by
    the connection itself."""

    __slots__ = ("data", "end_stream", "flow_size", "stream")

    def __init__(self, stream: Stream, data: bytes, flow_size: int, end_stream: bool) -> None:
        self.stream = stream
        self.data = data
        self.flow_size = flow_size
        self.end_stream = end_stream


class StreamReset(Event):
    """The stream was reset: by the peer (``remote``), or by us over a stream error or a limit."""

    __slots__ = ("code", "remote", "stream")

    def __init__(self, stream: Stream, code: int, remote: bool) -> None:
        self.stream = stream
        self.code = code
        self.remote = remote


class StreamClosed(Event):
    """Both halves ended normally and the stream is forgotten (its END_STREAM, if ours, has been sent)."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream) -> None:
        self.stream = stream


class SettingsReceived(Event):
    """The peer's SETTINGS were applied and acknowledged."""

    __slots__ = ()


class GoAwayReceived(Event):
    """The peer is going away: streams above ``last_stream_id`` were not and will not be processed."""

    __slots__ = ("code", "last_stream_id")

    def __init__(self, last_stream_id: int, code: int) -> None:
        self.last_stream_id = last_stream_id
        self.code = code


class ConnectionTerminated(Event):
    """We ended the connection (GOAWAY with ``code``; ``reason`` for the log): send what is queued, then close."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
