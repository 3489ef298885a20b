"""Property-based fuzzing (hypothesis) of the sans-IO HTTP/2 connection, its HPACK guard, the stream state
machine and the gRPC message reader, plus a replay of the seed corpus in tests/http2/corpus/.

The suite runs a short pass (FUZZ_EXAMPLES, 150 by default); a longer one by hand:

    TAILMARK_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/http2/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

import hpack
import pytest
from h2_peers import REQUEST, Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailmark.grpc_wire.messages import MessageError, MessageReader, prefix
from tailmark.http2 import events, frames
from tailmark.http2.connection import H2Connection
from tailmark.http2.hpack_codec import HeaderBlockRefused, HeaderDecoder, HeaderListTooLarge, scan_block
from tailmark.http2.limits import Limits
from tailmark.http2.stream_state import State, Stream, StreamError

FUZZ_EXAMPLES = int(os.environ.get("TAILMARK_FUZZ_EXAMPLES", "150"))
CORPUS = Path(__file__).parent / "corpus"
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = Limits(max_concurrent_streams=8, reset_burst=20, empty_frame_burst=20, control_burst=20, frames_per_turn=16)


def server(limits: Limits = SMALL) -> H2Connection:
    connection = H2Connection(limits=limits, clock=Clock())
    connection.initiate()
    connection.data_to_send()
    return connection


def feed(connection: H2Connection, data: bytes) -> list:
    """All of ``data``, turn after turn, as an application would; never an exception."""
    got = connection.receive_data(data)
    for _ in range(100_000):
        if not connection.input_pending:
            break
        got += connection.receive_data(b"")
    connection.data_to_send()
    return got


def check_invariants(connection: H2Connection) -> None:
    peer_open = sum(1 for stream_id in connection.streams if stream_id % 2)
    assert connection._peer_open == peer_open
    assert peer_open <= connection.limits.max_concurrent_streams
    assert connection.buffered_output >= 0 and connection._outbox_total >= 0
    assert connection.recv_window >= 0
    for stream_id, stream in connection.streams.items():
        assert stream.id == stream_id and stream.state is not State.IDLE
        assert stream.recv_window >= 0
        assert stream.outbox_bytes == sum(len(c) for c in stream.outbox or ()) - stream.outbox_offset
    if connection.terminated:
        assert connection.receive_data(frames.frame(frames.PING, 0, 0, b"12345678")) == []


def frame_strategy():
    kinds = st.integers(0, 11)
    return st.builds(
        lambda kind, flags, stream_id, payload: frames.frame(kind, flags, stream_id, payload),
        kinds,
        st.integers(0, 255),
        st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
        st.binary(max_size=40),
    )


# --- the frame parser and the connection ---


@fuzz
@given(st.binary(max_size=2000))
def test_random_bytes_after_the_preface(data):
    connection = server()
    feed(connection, frames.PREFACE + data)
    check_invariants(connection)


@fuzz
@given(st.binary(max_size=64))
def test_random_bytes_instead_of_the_preface(data):
    connection = server()
    got = feed(connection, data)
    if not frames.PREFACE.startswith(data):
        assert connection.terminated and isinstance(got[-1], events.ConnectionTerminated)


@fuzz
@given(st.lists(frame_strategy(), max_size=60))
def test_random_frames(parts):
    connection = server()
    feed(connection, frames.PREFACE + frames.settings({}) + b"".join(parts))
    check_invariants(connection)


@fuzz
@given(
    st.lists(
        st.tuples(st.sampled_from(["open", "data", "end", "rst", "ping", "window", "answer"]), st.integers(0, 12)),
        max_size=80,
    )
)
def test_request_lifecycles(operations):
    """Valid-looking requests, data, resets and answers in any order: the state machine stays consistent."""
    connection = server()
    encoder = hpack.Encoder()
    out = [frames.PREFACE, frames.settings({})]
    for operation, number in operations:
        stream_id = 2 * number + 1
        if operation == "open":
            out.append(frames.frame(frames.HEADERS, frames.END_HEADERS, stream_id, encoder.encode(REQUEST)))
        elif operation == "data":
            out.append(frames.frame(frames.DATA, 0, stream_id, b"x" * number))
        elif operation == "end":
            out.append(frames.frame(frames.DATA, frames.END_STREAM, stream_id))
        elif operation == "rst":
            out.append(frames.rst_stream(stream_id, frames.CANCEL))
        elif operation == "ping":
            out.append(frames.frame(frames.PING, 0, 0, b"12345678"))
        elif operation == "window":
            out.append(frames.window_update(stream_id if number % 2 else 0, number + 1))
        else:  # the application answers whatever stream is open
            feed(connection, b"".join(out))
            out = []
            for stream in list(connection.streams.values())[:1]:
                connection.send_headers(stream, b"\x88")
                connection.send_data(stream, b"a" * number * 1000)
                connection.end_stream(stream, b"\x00\x0bgrpc-status\x010")
    feed(connection, b"".join(out))
    check_invariants(connection)


# --- HPACK ---


@fuzz
@given(st.binary(max_size=500))
def test_hpack_guard_and_decoder_on_random_blocks(block):
    with contextlib.suppress(HeaderBlockRefused):
        scan_block(block, 50, 2)
    decoder = HeaderDecoder(1000, hard_limit=4000, max_fields=50, max_size_updates=2)
    with contextlib.suppress(hpack.HPACKError, HeaderBlockRefused, HeaderListTooLarge):
        decoder.decode(block)


header_lists = st.lists(
    st.tuples(st.sampled_from(["x-a", "x-b", "grpc-timeout", ":path", "te"]), st.text(max_size=30)), max_size=12
)


@fuzz
@given(st.lists(header_lists, min_size=1, max_size=8), st.sampled_from([0, 64, 256, 4096]))
def test_hpack_decoder_agrees_with_hpack_across_a_connection(blocks, table_size):
    """Blocks that share a dynamic table (the memo must follow it), against a plain hpack decoder."""
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size
    ours, reference = HeaderDecoder(1 << 20), hpack.Decoder()
    for headers in blocks + blocks:  # twice: the second pass hits the memo
        block = encoder.encode(headers)
        expected = {}
        for name, value in reference.decode(block):
            expected.setdefault(name, value)
        assert ours.decode(block) == expected


@fuzz
@given(st.integers(0, 6), st.integers(1, 3000))
def test_table_size_updates_counted_before_decoding(updates, fields):
    block = b"\x3f\xe1\x1f" * updates + b"\x82" * fields
    decoder = HeaderDecoder(1 << 20, max_fields=1000, max_size_updates=2)
    if updates > 2:
        with pytest.raises(HeaderBlockRefused) as info:
            decoder.decode(block)
        assert info.value.compression
    elif fields > 1000:
        with pytest.raises(HeaderBlockRefused):
            decoder.decode(block)
    else:
        assert decoder.decode(block)[":method"] == "GET"


# --- the stream state machine ---

TRANSITIONS = {
    # (state, event) -> next state, or None: refused with a stream error
    (State.OPEN, "recv_end"): State.HALF_CLOSED_REMOTE,
    (State.OPEN, "sent_end"): State.HALF_CLOSED_LOCAL,
    (State.HALF_CLOSED_LOCAL, "recv_end"): State.CLOSED,
    (State.HALF_CLOSED_REMOTE, "sent_end"): State.CLOSED,
    (State.HALF_CLOSED_REMOTE, "recv_end"): None,
    (State.CLOSED, "recv_end"): None,
}


@fuzz
@given(st.booleans(), st.lists(st.sampled_from(["recv_end", "sent_end", "recv_data", "reset"]), max_size=10))
def test_stream_states_follow_rfc_9113(end_on_open, steps):
    stream = Stream(1, 100, 100)
    stream.open(end_on_open)
    state = State.HALF_CLOSED_REMOTE if end_on_open else State.OPEN
    for step in steps:
        if step == "reset":
            stream.reset(frames.CANCEL)
            state = State.CLOSED
        elif step == "sent_end":
            if state in (State.OPEN, State.HALF_CLOSED_REMOTE):
                stream.sent_end()
                state = TRANSITIONS[(state, step)]
        else:
            remote_open = state in (State.OPEN, State.HALF_CLOSED_LOCAL)
            if remote_open:
                if step == "recv_end":
                    stream.receive_data(0, True)
                    state = TRANSITIONS[(state, step)]
                else:
                    stream.receive_data(1, False)
            else:
                with pytest.raises(StreamError) as info:
                    stream.receive_data(1, step == "recv_end")
                assert info.value.code == frames.STREAM_CLOSED
        assert stream.state is state


@fuzz
@given(st.integers(0, 200), st.integers(0, 200))
def test_stream_window_refuses_data_past_it(window, size):
    stream = Stream(1, 0, window)
    stream.open(False)
    if size > window:
        with pytest.raises(StreamError) as info:
            stream.receive_data(size, False)
        assert info.value.code == frames.FLOW_CONTROL_ERROR
    else:
        stream.receive_data(size, False)
        assert stream.recv_window == window - size


# --- gRPC messages ---


@fuzz
@given(st.lists(st.binary(max_size=300), max_size=6), st.lists(st.integers(1, 200), max_size=30), st.booleans())
def test_messages_survive_any_split(messages, cuts, compress):
    wire = b"".join(
        prefix(len(m := zlib.compress(message) if compress else message), compress) + m for message in messages
    )
    reader = MessageReader(10_000, zlib.MAX_WBITS if compress else None)
    got, offset = [], 0
    for cut in [*cuts, len(wire)]:
        got += reader.feed(wire[offset : offset + cut])
        offset += cut
        if offset >= len(wire):
            break
    got += reader.feed(wire[offset:])
    assert [bytes(m) for m in got] == messages
    reader.finish()


@fuzz
@given(st.binary(max_size=200))
def test_message_reader_on_random_bytes(data):
    reader = MessageReader(100, zlib.MAX_WBITS)
    try:
        for message in reader.feed(data):
            assert len(message) <= 100
        reader.finish()
    except MessageError:
        pass


def test_inflating_stops_at_the_limit():
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in about 64 KB
    reader = MessageReader(1 << 30, zlib.MAX_WBITS, max_inflated_bytes=4 << 20)
    with pytest.raises(MessageError) as info:
        reader.feed(prefix(len(bomb), True) + bomb)
    assert info.value.status == 8 and "larger than 4194304" in str(info.value)


# --- the seed corpus ---


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


def test_corpus_is_there():
    assert len(corpus_files()) >= 8


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_corpus_replays_cleanly(path):
    """Each seed, fed whole and fed a few bytes at a time: no exception, consistent state, same outcome."""
    data = path.read_bytes()
    whole = server(Limits())
    feed(whole, data)
    check_invariants(whole)
    pieces = server(Limits())
    for offset in range(0, len(data), 7):
        feed(pieces, data[offset : offset + 7])
    check_invariants(pieces)
    assert whole.terminated == pieces.terminated
    assert whole.counters.as_dict() == pieces.counters.as_dict()
