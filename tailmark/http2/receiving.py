"""The frame handlers of ``H2Connection`` (one method per frame type; RFC 9113 §6), a mixin kept apart from
the connection's bookkeeping and output so that each file reads in one sitting."""

from __future__ import annotations

import hpack

from tailmark.http2 import frames
from tailmark.http2.events import (
    DataReceived,
    GoAwayReceived,
    HeadersReceived,
    RequestReceived,
    SettingsReceived,
    StreamReset,
)
from tailmark.http2.hpack_codec import HeaderBlockRefused, HeaderListTooLarge
from tailmark.http2.stream_state import CLOSED, ConnectionError, Stream, StreamError

END_STREAM, END_HEADERS, PADDED = frames.END_STREAM, frames.END_HEADERS, frames.PADDED
_PADDED_OR_PRIORITY = frames.PADDED | frames.PRIORITY_FLAG


class FrameHandlers:
    """``_on_<frame type>(flags, stream_id, payload)``: raise StreamError / ConnectionError over a broken rule."""

    # --- frames in ---

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self.recv_window:
            self.counters.flow_control += 1
            raise ConnectionError(frames.FLOW_CONTROL_ERROR, f"{size} bytes of DATA past the connection window")
        self.recv_window -= size
        self._recv_unacked += size
        if self._recv_unacked >= self._credit_at:
            self._credit_connection()
        end = flags & END_STREAM
        if not size and not end:
            self._spend_empty()
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise ConnectionError(frames.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream already closed (reset, or answered): its late data is dropped
        if stream.state is CLOSED:
            return
        try:
            stream.receive_data(size, end)
        except StreamError as exc:
            self.counters.flow_control += exc.code == frames.FLOW_CONTROL_ERROR
            raise
        data = frames.unpad(flags, payload) if flags & PADDED else payload
        self.events.append(DataReceived(stream, data, size, bool(end)))
        if end and stream.state is CLOSED and not stream.outbox_bytes:
            self._remove(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = payload
        if flags & _PADDED_OR_PRIORITY:
            try:
                block = frames.unpad(flags, payload)
            except ValueError as exc:
                raise ConnectionError(frames.PROTOCOL_ERROR, str(exc)) from None
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
            return
        if not block:
            self._spend_empty()
        self._block = [stream_id, flags, bytearray(block), 0]
        self._block_started = self._now

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        pending = self._block
        if pending is None or pending[0] != stream_id:
            raise ConnectionError(frames.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        pending[3] += 1
        block = pending[2]
        block += payload
        limits = self.limits
        if pending[3] > limits.max_continuations:
            self.counters.continuations += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, f"more than {limits.max_continuations} CONTINUATIONs")
        if len(block) > limits.max_header_block_bytes:
            self.counters.header_block += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, f"header block over {limits.max_header_block_bytes} bytes")
        if flags & frames.END_HEADERS:
            self._block = None
            self._header_block(stream_id, pending[1], bytes(block))
        elif not payload:
            self._spend_empty()

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        if len(block) > self._max_block:
            self.counters.header_block += 1
            raise ConnectionError(frames.ENHANCE_YOUR_CALM, f"header block over {self._max_block}")
        error = None
        headers = self._decoded.get(block)  # a block seen before, with the dynamic table unchanged since
        if headers is None:
            headers, error = self._decode(block)
        end = flags & END_STREAM
        stream = self.streams.get(stream_id)
        if stream is not None:
            if stream.state is CLOSED:
                return
            stream.receive_headers(end)
            self.events.append(HeadersReceived(stream, headers, bool(end), error))
            if end and stream.state is CLOSED and not stream.outbox_bytes:
                self._remove(stream)
            return
        if not self.client and stream_id % 2 == 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, f"HEADERS on stream {stream_id} (clients open odd ones)")
        if self.client or stream_id <= self.highest_peer_stream:
            if self._idle(stream_id):
                raise ConnectionError(frames.PROTOCOL_ERROR, f"HEADERS on idle stream {stream_id}")
            if self.client:  # the answer to a call we reset (a deadline, a cancel) was on its way: dropped
                return
            raise StreamError(stream_id, frames.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self.highest_peer_stream = stream_id
        if self.draining or self._peer_open >= self.limits.max_concurrent_streams:
            self.counters.refused_streams += 1
            raise StreamError(stream_id, frames.REFUSED_STREAM, "over the concurrent stream limit")
        stream = self.streams[stream_id] = Stream(stream_id, self.peer_initial_window, self.limits.initial_window)
        stream.opened_at = self._now
        self._peer_open += 1
        stream.open(end)
        self.events.append(RequestReceived(stream, headers, bool(end), error))

    def _decode(self, block: bytes) -> tuple[dict[str, str], str | None]:
        """(headers, None), or ({}, why) for a list over the limit (only its stream fails); ConnectionError when
        the block cannot be decoded or breaks a limit that leaves the dynamic table out of step."""
        try:
            return self._decoder.decode(block), None  # always decoded: the dynamic table must stay in step
        except HeaderListTooLarge as exc:
            self.counters.header_list += 1
            return {}, str(exc)
        except HeaderBlockRefused as exc:
            setattr(self.counters, exc.limit, getattr(self.counters, exc.limit) + 1)
            code = frames.COMPRESSION_ERROR if exc.compression else frames.ENHANCE_YOUR_CALM
            raise ConnectionError(code, str(exc)) from None
        except hpack.HPACKError as exc:
            raise ConnectionError(frames.COMPRESSION_ERROR, f"bad header block: {exc}") from None

    def _on_priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise StreamError(stream_id, frames.FRAME_SIZE_ERROR, "PRIORITY payload must be 5 bytes")
        self._spend_empty()  # priorities are not used: a frame that asks for nothing

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError(frames.FRAME_SIZE_ERROR, "RST_STREAM payload must be 4 bytes")
        if self._idle(stream_id):
            raise ConnectionError(frames.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed:
            self._spend_empty()  # a stream already gone: the frame asks for nothing
            return
        if self._now - stream.opened_at < self.limits.rapid_reset_s:
            self._spend_reset()  # opened and reset at once (rapid reset); a deadline's cancel comes later
        del self.streams[stream_id]
        code = frames.u32(payload)
        self._forget(stream, reset=code)
        self.events.append(StreamReset(stream, code, remote=True))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise ConnectionError(frames.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError(frames.FRAME_SIZE_ERROR, "malformed SETTINGS")
        self._spend_control("SETTINGS")
        for key, value in frames.parse_settings(payload):
            if key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise ConnectionError(frames.FLOW_CONTROL_ERROR, "initial window too large")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                if delta:
                    for stream in self.streams.values():
                        stream.send_window += delta
                        if stream.send_window > frames.MAX_WINDOW:
                            raise ConnectionError(frames.FLOW_CONTROL_ERROR, "a stream window overflows")
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise ConnectionError(frames.PROTOCOL_ERROR, f"max frame size {value}")
                self.peer_max_frame = value
            elif key == frames.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == frames.ENABLE_PUSH and (value > 1 or (self.client and value)):
                raise ConnectionError(frames.PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
            # our header blocks never index, so the peer's table size does not matter
        self._queue_control(frames.frame(frames.SETTINGS, frames.ACK, 0))
        self.events.append(SettingsReceived())
        self._pump_blocked()

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ConnectionError(frames.PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError(frames.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
        if not flags & frames.ACK:
            self._spend_control("PING")
            self._queue_control(frames.frame(frames.PING, frames.ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError(frames.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ConnectionError(frames.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        self.goaway_received = True
        self.events.append(GoAwayReceived(frames.u32(payload), frames.u32(payload, 4)))

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = frames.u32(payload)
        if stream_id == 0:
            if not increment:
                raise ConnectionError(frames.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > frames.MAX_WINDOW:
                raise ConnectionError(frames.FLOW_CONTROL_ERROR, "connection window overflow")
            self._pump_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise ConnectionError(frames.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return
        if not increment:
            raise StreamError(stream_id, frames.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > frames.MAX_WINDOW:
            raise StreamError(stream_id, frames.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.outbox_bytes or stream.ending:
            self._pump(stream)
