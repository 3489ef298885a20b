"""tailmark's sans-IO HTTP/2 connection against an independent implementation, python-hyper's ``h2``, on both
sides: an h2 client to our server side, and our client side to an h2 server. In memory, no sockets."""

from __future__ import annotations

import h2.events
import h2.settings
import hpack
from h2_peers import REQUEST, HyperClientPair, HyperServerPair

from tailmark.http2 import events, frames
from tailmark.http2.limits import Limits

TRAILERS = b"\x00\x0bgrpc-status\x010"


def respond(pair: HyperClientPair, stream, body: bytes) -> None:
    pair.server.send_headers(stream, b"\x88")  # :status 200
    pair.server.send_data(stream, body)
    pair.server.end_stream(stream, TRAILERS)


def client_body(pair: HyperClientPair, stream_id: int) -> bytes:
    """The DATA the h2 client received on a stream, acknowledging it as it goes (so windows reopen)."""
    body = bytearray()
    for event in pair.client_events:
        if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
            body += event.data
    return bytes(body)


def test_request_and_response_with_trailers():
    pair = HyperClientPair()
    assert pair.client.remote_settings.max_concurrent_streams == 1000  # advertised
    assert pair.client.remote_settings.initial_window_size == 4 << 20
    pair.client.send_headers(1, REQUEST)
    pair.client.send_data(1, b"\x00\x00\x00\x00\x03abc", end_stream=True)
    received = pair.exchange()
    assert [type(e) for e in received] == [events.RequestReceived, events.DataReceived]
    request, data = received
    assert request.headers[":path"] == "/inference.GRPCInferenceService/ModelInfer" and not request.error
    assert data.data == b"\x00\x00\x00\x00\x03abc" and data.end_stream
    respond(pair, request.stream, b"answer")
    pair.exchange()
    kinds = [type(e) for e in pair.client_events]
    assert h2.events.ResponseReceived in kinds and h2.events.TrailersReceived in kinds
    assert h2.events.StreamEnded in kinds and h2.events.ConnectionTerminated not in kinds
    trailers = next(e for e in pair.client_events if isinstance(e, h2.events.TrailersReceived))
    assert dict(trailers.headers)["grpc-status"] == "0"
    assert client_body(pair, 1) == b"answer"
    assert pair.server.streams == {}  # both halves closed: forgotten


def test_large_response_waits_for_the_clients_window():
    pair = HyperClientPair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    (request,) = pair.exchange()
    body = bytes(range(256)) * 8192  # 2 MiB against h2's 64 KiB default windows
    respond(pair, request.stream, body)
    for _ in range(200):
        pair.exchange()
        for event in pair.client_events:
            if isinstance(event, h2.events.DataReceived) and not getattr(event, "acked", False):
                pair.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                event.acked = True
        if any(isinstance(e, h2.events.StreamEnded) for e in pair.client_events):
            break
    assert client_body(pair, 1) == body


def test_many_concurrent_streams_each_answered():
    pair = HyperClientPair()
    ids = range(1, 400, 2)
    for stream_id in ids:
        pair.client.send_headers(stream_id, REQUEST)
        pair.client.send_data(stream_id, stream_id.to_bytes(4, "big"), end_stream=True)
    received = pair.exchange()
    requests = [e for e in received if isinstance(e, events.DataReceived)]
    assert sorted(e.stream.id for e in requests) == list(ids)
    for event in requests:
        respond(pair, event.stream, event.data * 2)
    pair.exchange()
    for stream_id in ids:
        assert client_body(pair, stream_id) == stream_id.to_bytes(4, "big") * 2


def test_ping_settings_and_goaway():
    pair = HyperClientPair()
    pair.client.ping(b"tailmark")
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    pair.exchange()
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"tailmark" for e in pair.client_events)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in pair.client_events)
    assert pair.server.peer_initial_window == 1000
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.server.goaway()
    pair.exchange()
    (goaway,) = [e for e in pair.client_events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == 0 and goaway.last_stream_id == 1


def test_refused_beyond_the_concurrent_stream_limit_as_h2_reads_it():
    pair = HyperClientPair(Limits(max_concurrent_streams=3))
    assert pair.client.remote_settings.max_concurrent_streams == 3
    for stream_id in (1, 3, 5):
        pair.client.send_headers(stream_id, REQUEST)
    assert len(pair.exchange()) == 3
    pair.client.send_data(1, b"x", end_stream=True)  # the client ends one; we answer it: a slot is free
    (data,) = pair.exchange()
    respond(pair, data.stream, b"ok")
    pair.exchange()
    pair.client.send_headers(7, REQUEST)
    assert [type(e) for e in pair.exchange()] == [events.RequestReceived]


def test_our_client_side_against_an_h2_server():
    pair = HyperServerPair()
    assert pair.client.peer_max_streams >= 100 or pair.client.peer_max_streams == 2**31 - 1
    stream = pair.client.open_stream(hpack.Encoder().encode(REQUEST))
    pair.client.send_data(stream, b"\x00\x00\x00\x00\x02hi", end_stream=True)
    pair.exchange()
    received = [e for e in pair.server_events if isinstance(e, h2.events.DataReceived)]
    assert received and received[0].data == b"\x00\x00\x00\x00\x02hi" and received[0].stream_ended
    pair.server.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    pair.server.send_data(1, b"\x00\x00\x00\x00\x02ok")
    pair.server.send_headers(1, [("grpc-status", "0")], end_stream=True)
    got = pair.exchange()
    kinds = [type(e) for e in got]
    assert kinds == [events.HeadersReceived, events.DataReceived, events.HeadersReceived, events.StreamClosed]
    assert got[0].headers[":status"] == "200" and got[2].headers["grpc-status"] == "0" and got[2].end_stream
    assert got[1].data == b"\x00\x00\x00\x00\x02ok"
    assert pair.client.streams == {}
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in pair.server_events)


def test_client_side_refuses_server_push():
    pair = HyperServerPair()
    assert pair.server.remote_settings.enable_push == 0
    # a server may not open streams toward a client that disabled push: raw PUSH_PROMISE ends the connection
    got = pair.client.receive_data(frames.frame(frames.PUSH_PROMISE, frames.END_HEADERS, 1, b"\x00\x00\x00\x02"))
    assert [type(e) for e in got] == [events.ConnectionTerminated]
    assert got[0].code == frames.PROTOCOL_ERROR
