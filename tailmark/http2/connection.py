"""A sans-IO HTTP/2 connection (RFC 9113): bytes in, events and bytes out; no sockets, no event loop.

``receive_data(data)`` parses frames, keeps the protocol (stream states, flow control both ways, settings,
PING, GOAWAY, header blocks) and returns ``events`` for the application; ``data_to_send()`` is what to
write. The application answers through ``send_headers`` / ``send_data`` / ``end_stream`` /
``reset_stream``, and gives window back with ``acknowledge_stream`` as it takes a stream's data.

Every limit is in ``Limits`` (limits.py) and every hit is counted in ``counters``. Input is handled at most
``frames_per_turn`` frames per call: ``input_pending`` then says there is more, and the application calls
``receive_data(b"")`` again on a later turn of its loop, so one busy peer cannot starve the rest.
"""

from __future__ import annotations

import time

from tailmark.http2 import frames
from tailmark.http2.events import ConnectionTerminated, StreamClosed, StreamReset
from tailmark.http2.hpack_codec import HeaderDecoder
from tailmark.http2.limits import Budget, LimitCounters, Limits
from tailmark.http2.receiving import FrameHandlers
from tailmark.http2.sending import Output
from tailmark.http2.stream_state import ConnectionError, ProtocolError, State, Stream, StreamError

_HEADER = frames.HEADER


class H2Connection(FrameHandlers, Output):
    """One HTTP/2 connection, server side (``client=False``: it reads the preface first) or client side."""

    def __init__(
        self,
        *,
        client: bool = False,
        limits: Limits | None = None,
        clock=time.monotonic,
        report_closed: bool = True,
    ) -> None:
        self.client = client
        self.report_closed = report_closed  # StreamClosed events (an application that tracks ends itself: off)
        self.limits = limits = limits or Limits()
        self.counters = LimitCounters()
        self.streams: dict[int, Stream] = {}
        self.events: list = []
        self.terminated = False  # we sent (or decided on) GOAWAY with an error: nothing more is read
        self.draining = False  # we sent GOAWAY: new streams are refused
        self.goaway_received = False
        self.write_backlog = 0  # bytes the application's transport still holds (set by the application)
        self._clock = clock
        self._now = clock()
        self._partial = bytearray()  # the start of a frame still arriving
        self._held: bytes | None = None  # complete frames left for the next turn, from _held_at
        self._held_at = 0
        self._out: list = []
        self._preface_pending = not client
        self._max_block = limits.max_header_block_bytes
        self._initial_window = limits.initial_window
        self._credit_at = limits.connection_window // 2  # connection window taken before it is given back
        self._block: list | None = None  # a header block in CONTINUATIONs: [stream id, flags, bytes, frames]
        self._block_started = 0.0
        self._decoder = HeaderDecoder(
            limits.max_header_list_bytes,
            hard_limit=limits.hard_header_list_bytes,
            max_fields=limits.max_header_fields,
            max_size_updates=limits.max_table_size_updates,
        )
        self._decoded = self._decoder.cache
        self.peer_initial_window = frames.DEFAULT_WINDOW
        self.peer_max_frame = frames.DEFAULT_MAX_FRAME
        self.peer_max_streams = 2**31 - 1
        self.send_window = frames.DEFAULT_WINDOW  # connection-level, what we may still send
        self.recv_window = frames.DEFAULT_WINDOW  # connection-level, what the peer may still send
        self._recv_unacked = 0
        self.highest_peer_stream = 0
        self._next_stream_id = 1 if client else 2
        self._peer_open = 0  # streams the peer opened that are not closed
        self._peer_parity = 0 if client else 1  # id & 1 of the streams the peer opens
        self._blocked: dict[int, Stream] = {}  # streams with output waiting for window
        self._outbox_total = 0
        self.control_backlog = 0  # acks written since the transport last said it had sent everything
        self._last_progress = self._now
        self._last_frame = self._now
        self._resets = Budget(limits.reset_burst, limits.reset_rate_per_s, self._now)
        self._empty = Budget(limits.empty_frame_burst, limits.empty_frame_rate_per_s, self._now)
        self._control = Budget(limits.control_burst, limits.control_rate_per_s, self._now)
        self._handlers = {
            frames.DATA: self._on_data,
            frames.HEADERS: self._on_headers,
            frames.PRIORITY: self._on_priority,
            frames.RST_STREAM: self._on_rst_stream,
            frames.SETTINGS: self._on_settings,
            frames.PUSH_PROMISE: self._on_push_promise,
            frames.PING: self._on_ping,
            frames.GOAWAY: self._on_goaway,
            frames.WINDOW_UPDATE: self._on_window_update,
            frames.CONTINUATION: self._on_continuation,
        }

    # --- start ---

    def initiate(self) -> None:
        """Our SETTINGS and connection window (and the preface first, client side)."""
        limits = self.limits
        own = {
            frames.ENABLE_PUSH: 0,
            frames.INITIAL_WINDOW_SIZE: limits.initial_window,
            frames.MAX_FRAME_SIZE: limits.max_frame_bytes,
            frames.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
        }
        if not self.client:
            own[frames.MAX_CONCURRENT_STREAMS] = limits.max_concurrent_streams
        if self.client:
            self._out.append(frames.PREFACE)
        self._out.append(frames.settings(own))
        if limits.connection_window > frames.DEFAULT_WINDOW:
            self._out.append(frames.window_update(0, limits.connection_window - frames.DEFAULT_WINDOW))
            self.recv_window = limits.connection_window

    # --- input ---

    @property
    def input_pending(self) -> bool:
        """Complete frames are waiting: call ``receive_data(b"")`` again (on a later loop turn)."""
        return self._held is not None and not self.terminated

    def receive_data(self, data: bytes) -> list:
        """Take bytes from the peer; the events they caused (also in ``self.events`` until the next call)."""
        events = self.events = []
        if self.terminated:
            return events
        self._now = now = self._clock()
        self._last_frame = now
        try:
            if self._preface_pending:
                self._partial += data
                if not self._take_preface():
                    return events
                data = b""
            self._take_frames(data)
        except StreamError as exc:  # raised outside a frame handler: cannot happen, kept for safety
            self._stream_error(exc)
        except ConnectionError as exc:
            self.terminate(exc.code, str(exc))
        return events

    def _take_preface(self) -> bool:
        buffer, preface = self._partial, frames.PREFACE
        if len(buffer) < len(preface):
            if not preface.startswith(bytes(buffer)):
                raise ConnectionError(frames.PROTOCOL_ERROR, "not an HTTP/2 client (no connection preface)")
            return False
        if buffer[: len(preface)] != preface:
            raise ConnectionError(frames.PROTOCOL_ERROR, "not an HTTP/2 client (no connection preface)")
        del buffer[: len(preface)]
        self._preface_pending = False
        return True

    def _take_frames(self, data: bytes) -> None:
        """Frames are cut out of one ``bytes`` object, one copy each. An unfinished frame waits in ``_partial``
        (joined to the bytes after it only once it is complete, so a large frame arriving in many pieces is
        not copied again for each); complete frames past this turn's budget wait in ``_held``, read on from
        ``_held_at`` next turn without copying the rest."""
        partial = self._partial
        offset = 0
        if partial:
            partial += data
            if len(partial) < 9:
                return
            length = (partial[0] << 16) | (partial[1] << 8) | partial[2]
            if length > self.limits.max_frame_bytes:
                raise ConnectionError(frames.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if len(partial) < 9 + length:
                return
            data = bytes(partial)
            partial.clear()
        elif self._held is not None:
            held, offset = self._held, self._held_at
            self._held = None
            if data:
                data, offset = held[offset:] + data, 0
            else:
                data = held
        size = len(data)
        unpack = _HEADER.unpack_from
        handlers = self._handlers
        max_frame = self.limits.max_frame_bytes
        budget = self.limits.frames_per_turn
        length = 0
        try:
            while size - offset >= 9:
                high, low, kind, flags, stream_id = unpack(data, offset)
                length = (high << 16) | low
                if length > max_frame:
                    raise ConnectionError(frames.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = offset + 9 + length
                if end > size or not budget:
                    break
                payload = data[offset + 9 : end]
                offset = end
                budget -= 1
                if self._block is not None and kind != frames.CONTINUATION:
                    raise ConnectionError(frames.PROTOCOL_ERROR, "header block interrupted")
                handler = handlers.get(kind)
                try:
                    if handler is None:  # unknown types are ignored (RFC 9113 §5.5), but they cost the budget
                        self._spend_empty()
                    else:
                        handler(flags, stream_id & 0x7FFFFFFF, payload)
                except StreamError as exc:
                    self._stream_error(exc)
                if self.terminated:
                    return
        finally:
            if offset < size and not self.terminated:
                if size - offset >= 9 and offset + 9 + length <= size:  # complete, over the budget
                    self._held, self._held_at = data, offset
                else:
                    partial += memoryview(data)[offset:]

    # --- bookkeeping ---

    def _idle(self, stream_id: int) -> bool:
        """Never opened: above every stream id either side has used (RFC 9113 §5.1.1)."""
        if stream_id % 2 == (1 if self.client else 0):  # ours
            return stream_id >= self._next_stream_id
        return stream_id > self.highest_peer_stream

    def _spend_reset(self) -> None:
        if not self._resets.spend(self._now):
            self.counters.resets += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, "too many stream resets")

    def _spend_empty(self) -> None:
        if not self._empty.spend(self._now):
            self.counters.empty_frames += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, "too many frames that carry nothing")

    def _spend_control(self, kind: str) -> None:
        if not self._control.spend(self._now):
            self.counters.control_frames += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, f"{kind} flood")

    def _queue_control(self, frame: bytes) -> None:
        self.control_backlog += 1
        if self.control_backlog > self.limits.max_control_backlog:
            self.counters.control_backlog += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, "control frames queued for a peer that does not read")
        self._out.append(frame)

    def _stream_error(self, exc: StreamError) -> None:
        self._spend_reset()  # our resets over the peer's errors cost the same budget as its own resets
        self._out.append(frames.rst_stream(exc.stream_id, exc.code))
        stream = self.streams.pop(exc.stream_id, None)
        if stream is not None and not stream.closed:
            self._forget(stream, reset=exc.code)
            self.events.append(StreamReset(stream, exc.code, remote=False))

    def _remove(self, stream: Stream) -> None:
        """Both halves ended: forget the stream (it holds no output)."""
        stream_id = stream.id
        if self.streams.pop(stream_id, None) is not None:
            if self._blocked:
                self._blocked.pop(stream_id, None)
            if stream_id & 1 == self._peer_parity:
                self._peer_open -= 1
            if self.report_closed:
                self.events.append(StreamClosed(stream))

    def _forget(self, stream: Stream, *, reset: int | None) -> None:
        """The stream is gone from ``streams``: release what it held."""
        if reset is not None:
            self._outbox_total -= stream.outbox_bytes
            stream.reset(reset)
        self._blocked.pop(stream.id, None)
        if stream.id & 1 == self._peer_parity:
            self._peer_open -= 1

    def _credit_connection(self) -> None:
        """Half the connection window was taken: give it back, unless the peer's output is piling up (then it
        gets no room for more requests until it reads)."""
        if self.buffered_output > self.limits.max_buffered_output:
            self.counters.buffered_output += 1
            return
        self._release_connection_credit()

    def _release_connection_credit(self) -> None:
        if self._recv_unacked:
            self._out.append(frames.window_update(0, self._recv_unacked))
            self.recv_window += self._recv_unacked
            self._recv_unacked = 0

    # --- ending ---

    def goaway(self, code: int = frames.NO_ERROR, reason: str = "") -> None:
        """Graceful: no new streams from the peer; the open ones finish."""
        if not self.draining and not self.terminated:
            self.draining = True
            self._out.append(frames.goaway(self.highest_peer_stream, code, reason.encode()[:200]))

    def terminate(self, code: int, reason: str) -> None:
        """GOAWAY with an error, then nothing more: the application sends what is queued and closes."""
        if self.terminated:
            return
        self.terminated = self.draining = True
        if not self._preface_pending:
            self._out.append(frames.goaway(self.highest_peer_stream, code, reason.encode()[:200]))
        self.events.append(ConnectionTerminated(code, reason))

    def check_timeouts(self, now: float | None = None) -> bool:
        """Terminate over a timeout (header block or preface unfinished, output stuck, idle); True if it did."""
        if self.terminated:
            return False
        now = self._clock() if now is None else now
        self._now = now
        limits = self.limits
        self.events = []
        if self._preface_pending and now - self._last_frame > limits.header_timeout_s:
            self.terminate(frames.PROTOCOL_ERROR, "no connection preface in time")
        elif self._block is not None and now - self._block_started > limits.header_timeout_s:
            self.terminate(frames.PROTOCOL_ERROR, "header block not finished in time")
        elif self.buffered_output and now - self._last_progress > limits.write_timeout_s:
            self.counters.write_timeout += 1
            self.terminate(frames.ENHANCE_YOUR_CALM, f"output stuck for {limits.write_timeout_s:g} s")
        elif limits.idle_timeout_s and not self.streams and now - self._last_frame > limits.idle_timeout_s:
            self.goaway(frames.NO_ERROR, "idle")
            self.terminated = True
            self.events.append(ConnectionTerminated(frames.NO_ERROR, "idle"))
        return self.terminated

    def progress(self) -> None:
        """The application's transport sent some of what it held (the write timeout starts again)."""
        self._last_progress = self._clock()


__all__ = ["H2Connection", "ProtocolError", "State", "Stream"]
