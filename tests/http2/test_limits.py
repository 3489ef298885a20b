"""Limits of the sans-IO connection that need a clock or exact counts, in memory: timeouts, budgets refilling
with time, output held back from a peer that does not read, the per-turn frame budget and counters."""

from __future__ import annotations

import struct

import pytest
from h2_peers import Clock, RawClient

from support.runcli import tailmark
from tailmark.http2 import events, frames
from tailmark.http2.connection import H2Connection
from tailmark.http2.limits import Limits


def test_frames_per_turn_leaves_the_rest_for_a_later_turn():
    client = RawClient(Limits(frames_per_turn=10), handshake=False)
    got = client.server.receive_data(frames.PREFACE + frames.frame(frames.PING, 0, 0, b"12345678") * 25)
    assert got == [] and client.server.input_pending
    client.server.receive_data(b"")
    client.server.receive_data(b"")
    assert not client.server.input_pending
    client._received += client.server.data_to_send()
    assert sum(1 for kind, flags, *_ in client.frames() if kind == frames.PING and flags & frames.ACK) == 25


def test_frames_held_for_a_later_turn_come_before_bytes_that_arrive_meanwhile():
    """Frames past the turn's budget, then more bytes (the last frame split) before the application took the rest:
    every frame is handled once, in order."""
    client = RawClient(Limits(frames_per_turn=10), handshake=False)
    pings = b"".join(frames.frame(frames.PING, 0, 0, b"%08d" % n) for n in range(30))
    client.server.receive_data(frames.PREFACE + pings[:-5])  # 25 PINGs and a half, budget 10
    assert client.server.input_pending
    client.server.receive_data(pings[-5:])
    while client.server.input_pending:
        client.server.receive_data(b"")
    client._received += client.server.data_to_send()
    acks = [payload for kind, flags, _, payload in client.frames() if kind == frames.PING and flags & frames.ACK]
    assert acks == [b"%08d" % n for n in range(30)]


def test_reset_budget_refills_with_time():
    client = RawClient(Limits(reset_burst=10, reset_rate_per_s=10.0))
    for second in range(5):  # 8 open-and-reset pairs a second: within the steady rate
        stream_ids = range(1 + 16 * second, 17 + 16 * second, 2)
        client.send(b"".join(client.headers(sid) + frames.rst_stream(sid, frames.CANCEL) for sid in stream_ids))
        client.clock.now += 1.0
    assert client.goaway_code() is None and client.server.counters.resets == 0
    burst = range(101, 141, 2)  # 20 at once: over
    client.send(b"".join(client.headers(sid) + frames.rst_stream(sid, frames.CANCEL) for sid in burst))
    assert client.goaway_code() == frames.ENHANCE_YOUR_CALM
    assert client.server.counters.as_dict() == {"resets": 1}


def test_resets_of_streams_that_ran_a_while_cost_nothing():
    """A client cancelling calls at their deadline is not a rapid-reset attacker, however many it cancels."""
    client = RawClient(Limits(reset_burst=10, reset_rate_per_s=1.0))
    stream_ids = range(1, 401, 2)
    client.send(b"".join(client.headers(sid) for sid in stream_ids))
    client.clock.now += 0.5  # the deadlines pass
    client.send(b"".join(frames.rst_stream(sid, frames.CANCEL) for sid in stream_ids))
    assert client.goaway_code() is None and client.server.streams == {}
    assert sum(isinstance(e, events.StreamReset) for e in client.events) == 200


def test_concurrent_stream_limit_counts_only_open_streams():
    client = RawClient(Limits(max_concurrent_streams=2))
    client.send(client.headers(1) + client.headers(3) + client.headers(5))
    assert [kind for kind, *_ in client.frames()][-1] == frames.RST_STREAM
    assert client.server.counters.refused_streams == 1
    client.send(frames.frame(frames.DATA, frames.END_STREAM, 1))
    stream = client.server.streams[1]
    client.server.send_headers(stream, b"\x88", end_stream=True)  # answered: stream 1 is closed
    client.send(client.headers(7))
    assert 7 in client.server.streams and client.server.counters.refused_streams == 1


def test_output_held_for_a_peer_that_does_not_read_stops_its_connection_window():
    limits = Limits(max_buffered_output=1 << 20, connection_window=1 << 20, initial_window=1 << 20)
    client = RawClient(limits, handshake=False)
    client.send(frames.PREFACE + frames.settings({frames.INITIAL_WINDOW_SIZE: 0}))  # it never opens its window
    client.send(client.headers(1, end_stream=True))
    stream = client.server.streams[1]
    client.server.send_data(stream, b"x" * (2 << 20))  # 2 MiB held: over the 1 MiB limit
    client.frames()
    client.send(client.headers(3) + frames.frame(frames.DATA, 0, 3, b"y" * (600 << 10)))
    updates = [f for f in client.frames() if f[0] == frames.WINDOW_UPDATE and f[2] == 0]
    assert updates == [] and client.server.counters.buffered_output == 1  # no more room to send requests
    client.send(frames.window_update(1, 4 << 20) + frames.window_update(0, 4 << 20))  # it reads after all
    client.server.output_flushed()
    client._received += client.server.data_to_send()
    assert any(f[0] == frames.WINDOW_UPDATE and f[2] == 0 for f in client.frames())


def test_write_timeout_closes_a_connection_whose_output_does_not_move():
    client = RawClient(Limits(write_timeout_s=5.0), handshake=False)
    client.send(frames.PREFACE + frames.settings({frames.INITIAL_WINDOW_SIZE: 0}))
    client.send(client.headers(1, end_stream=True))
    client.server.send_data(client.server.streams[1], b"x" * 1000)
    client.clock.now += 4.0
    assert not client.server.check_timeouts()
    client.clock.now += 2.0
    assert client.server.check_timeouts()
    assert isinstance(client.server.events[-1], events.ConnectionTerminated)
    assert client.server.counters.write_timeout == 1


@pytest.mark.parametrize("stalled", ["preface", "header block"])
def test_header_timeout(stalled):
    client = RawClient(Limits(header_timeout_s=10.0), handshake=False)
    if stalled == "preface":
        client.send(frames.PREFACE[:10])
    else:
        client.send(frames.PREFACE + frames.settings({}) + frames.frame(frames.HEADERS, 0, 1, client.block()))
    client.clock.now += 11.0
    assert client.server.check_timeouts()


def test_idle_timeout_is_off_by_default_and_graceful_when_on():
    client = RawClient()
    client.clock.now += 3600.0
    assert not client.server.check_timeouts()
    client = RawClient(Limits(idle_timeout_s=60.0))
    client.clock.now += 61.0
    assert client.server.check_timeouts()
    client._received += client.server.data_to_send()
    assert client.goaway_code() == frames.NO_ERROR


def test_window_update_overflow_and_zero_increment():
    client = RawClient()
    client.send(frames.window_update(0, 0))
    assert client.goaway_code() == frames.PROTOCOL_ERROR
    client = RawClient()
    client.send(client.headers(1))
    client.send(frames.window_update(1, 2**31 - 1))
    assert next(f for f in client.frames() if f[0] == frames.RST_STREAM)[3] == struct.pack(
        ">I", frames.FLOW_CONTROL_ERROR
    )
    assert not client.server.terminated


def test_limits_from_assignments():
    limits = Limits.from_assignments(["max_concurrent_streams=200", "write-timeout-s=2.5", "max_buffered_input=1_000"])
    assert (limits.max_concurrent_streams, limits.write_timeout_s, limits.max_buffered_input) == (200, 2.5, 1000)
    assert Limits.from_assignments([]) == Limits()
    for bad, said in [
        ("nope=1", "no limit 'nope'; the limits are max_concurrent_streams, "),
        ("max_concurrent_streams=lots", "max_concurrent_streams takes a whole number"),
        ("max_concurrent_streams", "expected NAME=VALUE"),
        ("max_frame_bytes=100", "max_frame_bytes=100 requested; must be in 16384..16777215"),
    ]:
        with pytest.raises(ValueError, match=said):
            Limits.from_assignments([bad])


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--h2-limit", "nope=1"], "tailmark serve: --h2-limit 'nope=1': no limit 'nope'"),
        (["--h2-limit", "reset_burst=-1"], "tailmark serve: --h2-limit: reset_burst=-1 requested; must be >= 0"),
        (["--grpc-stack", "aio", "--h2-limit", "reset_burst=5"], "--h2-limit applies to --grpc-stack h2, not aio"),
    ],
)
def test_serve_refuses_a_bad_h2_limit_in_one_line(flags, said):
    done = tailmark("serve", "--port", "0", *flags, timeout_s=60)
    assert done.returncode == 2 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_client_drops_late_answers_to_streams_it_reset():
    """Answers already on their way when the client reset their streams (deadlines, cancels) are dropped
    quietly: no RST_STREAM back, no reset budget spent, however many there are."""
    client = H2Connection(client=True, limits=Limits(reset_burst=2, reset_rate_per_s=0.001), clock=Clock())
    client.initiate()
    for _ in range(20):
        stream = client.open_stream(b"\x83\x86", end_stream=True)
        client.reset_stream(stream, frames.CANCEL)
        late = frames.frame(frames.HEADERS, frames.END_HEADERS, stream.id, b"\x88")
        assert client.receive_data(late + frames.frame(frames.DATA, 0, stream.id, b"answer")) == []
    assert not client.terminated and client.counters.as_dict() == {}
    out, resets, offset = client.data_to_send(), [], len(frames.PREFACE)
    while offset < len(out):
        length, kind = int.from_bytes(out[offset : offset + 3], "big"), out[offset + 3]
        if kind == frames.RST_STREAM:
            resets.append(int.from_bytes(out[offset + 5 : offset + 9], "big"))
        offset += 9 + length
    assert resets == list(range(1, 41, 2))  # our own 20 CANCELs, nothing for the late frames
