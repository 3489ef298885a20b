"""The sending side of ``H2Connection``: header blocks, DATA within both flow-control windows, stream ends,
resets and window given back, as a mixin kept apart from the frame handlers."""

from __future__ import annotations

from collections import deque

from tailmark.http2 import frames
from tailmark.http2.hpack_codec import headers_frames
from tailmark.http2.stream_state import CLOSED, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, OPEN, Stream

_HEADER = frames.HEADER
DATA, HEADERS, END_STREAM, _END_HEADERS = frames.DATA, frames.HEADERS, frames.END_STREAM, frames.END_HEADERS


class Output:
    """What the application sends; everything goes to ``_out`` until ``data_to_send``."""

    # --- output ---

    @property
    def buffered_output(self) -> int:
        """Bytes held for the peer: waiting for its flow-control window, or in the application's transport."""
        return self._outbox_total + self.write_backlog

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def output_flushed(self) -> None:
        """The application's transport has sent everything: acks are no longer piling up."""
        self.control_backlog = 0
        self.write_backlog = 0
        self._last_progress = self._clock()
        if self._recv_unacked >= self._credit_at and self._outbox_total <= self.limits.max_buffered_output:
            self._release_connection_credit()

    @property
    def next_stream_id(self) -> int:
        """The id ``open_stream`` gives the next stream (client side)."""
        return self._next_stream_id

    def open_stream(self, block: bytes, *, end_stream: bool = False, stream: Stream | None = None) -> Stream:
        """Client side: a new stream with its request header block. ``stream``: an idle Stream (or an instance
        of the application's subclass of it, which then serves as the call itself) to open instead of a new one."""
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        if stream is None:
            stream = Stream(stream_id, self.peer_initial_window, self._initial_window)
        else:
            stream.id = stream_id
            stream.send_window, stream.recv_window = self.peer_initial_window, self._initial_window
        self.streams[stream_id] = stream
        stream.opened_at = self._now
        stream.state = OPEN
        size = len(block)
        if size <= self.peer_max_frame:
            flags = _END_HEADERS | END_STREAM if end_stream else _END_HEADERS
            self._out += (_HEADER.pack(size >> 16, size & 0xFFFF, HEADERS, flags, stream_id), block)
        else:
            self._out.append(headers_frames(stream_id, block, end_stream=end_stream, max_frame=self.peer_max_frame))
        if end_stream:
            stream.sent_end()
        return stream

    def send_headers(self, stream: Stream, block: bytes, *, end_stream: bool = False) -> None:
        if not stream.local_open:
            return
        self._out.append(headers_frames(stream.id, block, end_stream=end_stream, max_frame=self.peer_max_frame))
        if end_stream:
            self._sent_end(stream)

    def send_data(self, stream: Stream, *chunks, end_stream: bool = False) -> None:
        """Queue DATA (chunks are kept, not copied) and send what the windows allow."""
        state = stream.state
        if state is not OPEN and state is not HALF_CLOSED_REMOTE:
            return
        if stream.trailers is not None or stream.end_with_data:  # its end is queued (``ending``, written out)
            return
        outbox = stream.outbox
        if not outbox:  # nothing queued before: what fits both windows and one frame goes straight out
            size = sum(map(len, chunks))
            if 0 < size <= stream.send_window and size <= self.send_window and size <= self.peer_max_frame:
                self._out += (_HEADER.pack(size >> 16, size & 0xFFFF, DATA, end_stream, stream.id), *chunks)
                stream.send_window -= size
                self.send_window -= size
                self._last_progress = self._now
                if end_stream:
                    self._sent_end(stream)
                return
            if outbox is None:
                outbox = stream.outbox = deque()
        for chunk in chunks:
            if chunk:
                outbox.append(chunk)
                stream.outbox_bytes += len(chunk)
                self._outbox_total += len(chunk)
        stream.end_with_data = end_stream
        self._pump(stream)

    def send_response(self, stream: Stream, head: bytes, chunks: tuple, trailers: bytes) -> None:
        """A whole answer: headers, DATA and trailers (END_STREAM). When the windows and the frame size allow it
        all, the three frames go out in one pass (the common unary call); otherwise as send_headers,
        send_data and end_stream would."""
        state = stream.state
        if (state is not HALF_CLOSED_REMOTE and state is not OPEN) or stream.ending:
            return
        size = sum(map(len, chunks))
        max_frame = self.peer_max_frame
        if (
            stream.outbox_bytes
            or size > stream.send_window
            or size > self.send_window
            or size > max_frame
            or len(head) > max_frame
            or len(trailers) > max_frame
        ):
            self.send_headers(stream, head)
            self.send_data(stream, *chunks)
            self.end_stream(stream, trailers)
            return
        stream_id, pack = stream.id, _HEADER.pack
        self._out.extend(
            (
                pack(0, len(head), frames.HEADERS, frames.END_HEADERS, stream_id),
                head,
                pack(size >> 16, size & 0xFFFF, frames.DATA, 0, stream_id),
                *chunks,
                pack(0, len(trailers), frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, stream_id),
                trailers,
            )
        )
        stream.send_window -= size
        self.send_window -= size
        self._last_progress = self._now
        self._sent_end(stream)

    def end_stream(self, stream: Stream, trailers: bytes | None) -> None:
        """END_STREAM once the queued DATA has gone: on a trailers HEADERS, or (None) an empty DATA frame."""
        if not stream.local_open:
            return
        if trailers is None:
            stream.end_with_data = True
        else:
            stream.trailers = trailers
        self._pump(stream)

    def reset_stream(self, stream: Stream, code: int) -> None:
        """RST_STREAM: what was queued for it is dropped."""
        if stream.closed:
            return
        self._out.append(frames.rst_stream(stream.id, code))
        self.streams.pop(stream.id, None)
        self._forget(stream, reset=code)

    def acknowledge_stream(self, stream: Stream, size: int) -> None:
        """The application took ``size`` bytes of the stream's DATA: give the peer that window back (in halves)."""
        state = stream.state
        if state is not OPEN and state is not HALF_CLOSED_LOCAL:  # the peer sends no more on it
            return
        stream.recv_unacked += size
        if stream.recv_unacked >= self.limits.initial_window // 2:
            self._out.append(frames.window_update(stream.id, stream.recv_unacked))
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    def _pump_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        """Send the stream's DATA within both windows, then its END_STREAM when everything has gone."""
        out, outbox = self._out, stream.outbox
        end_sent = False
        while stream.outbox_bytes:
            size = min(stream.outbox_bytes, stream.send_window, self.send_window, self.peer_max_frame)
            if size <= 0:
                self._blocked[stream.id] = stream
                return
            end_sent = size == stream.outbox_bytes and stream.end_with_data and stream.trailers is None
            out.append(_HEADER.pack(size >> 16, size & 0xFFFF, frames.DATA, int(end_sent), stream.id))
            remaining = size
            while remaining:
                chunk, offset = outbox[0], stream.outbox_offset
                available = len(chunk) - offset
                if available <= remaining:
                    out.append(chunk if not offset else memoryview(chunk)[offset:])
                    outbox.popleft()
                    stream.outbox_offset = 0
                    remaining -= available
                else:
                    out.append(memoryview(chunk)[offset : offset + remaining])
                    stream.outbox_offset = offset + remaining
                    remaining = 0
            stream.outbox_bytes -= size
            stream.send_window -= size
            self.send_window -= size
            self._outbox_total -= size
            self._last_progress = self._now
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            self._out.append(headers_frames(stream.id, stream.trailers, end_stream=True, max_frame=self.peer_max_frame))
            self._sent_end(stream)
        elif stream.end_with_data:
            if not end_sent:
                self._out.append(frames.frame(frames.DATA, frames.END_STREAM, stream.id))
            self._sent_end(stream)

    def _sent_end(self, stream: Stream) -> None:
        stream.trailers = None
        stream.end_with_data = False
        stream.sent_end()
        if stream.state is HALF_CLOSED_LOCAL and not self.client:
            # the answer is complete: the client need not send the rest of its request (RFC 9113 §8.1)
            self._out.append(frames.rst_stream(stream.id, frames.NO_ERROR))
            stream.state = CLOSED
        if stream.state is CLOSED:
            self._remove(stream)
