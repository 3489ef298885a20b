"""Known HTTP/2 attacks against a real ``tailmark serve`` (h2 stack), one test each, a couple of seconds each.

Every test checks the answer the RFC and issue 11 ask for (GOAWAY ENHANCE_YOUR_CALM, REFUSED_STREAM,
FLOW_CONTROL_ERROR, COMPRESSION_ERROR, a failed call), the server's memory growth during the attack
(VmRSS from /proc, far under 100 MiB), and that good calls on another connection were answered meanwhile.
"""

from __future__ import annotations

import socket
import time
import zlib

import numpy as np
import pytest

from support.h2_attacker import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    PING,
    REFUSED_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Attacker,
    GoodTraffic,
    RssWatch,
    frame,
    grpc_message,
    rst,
)
from support.serve import ServerProcess
from tailmark.protos import inference_pb2 as pb

MIB = 1 << 20
INFER_PATH = b"/inference.GRPCInferenceService/ModelInfer"
ATTACK_S = 1.5


@pytest.fixture(scope="module")
def server(test_repository):
    with ServerProcess(test_repository, "--grpc-stack", "h2") as process:
        yield process
        assert process.alive(), "\n".join(process.lines[-30:])


def message(values: int, model: str = "identity") -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[values])
    request.raw_input_contents.append(np.zeros(values, np.float32).tobytes())
    return request.SerializeToString()


def flood(attacker: Attacker, chunk: bytes, seconds: float = ATTACK_S, stall_s: float = 0.3) -> None:
    """Send ``chunk`` over and over without reading, until ``seconds`` pass, the server hangs up, or it stops
    reading for ``stall_s`` (then what it sent can still be read, before it drops a peer that does not read)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and attacker.send(chunk, min(deadline, time.monotonic() + stall_s)):
        pass


def attack(server, run, *, max_growth: int = 64 * MIB):
    """Run ``run(attacker_factory)`` with good traffic beside it; check memory and the good calls."""
    with GoodTraffic(server.target) as good, RssWatch(server.process.pid) as rss:
        result = run()
    good.check()
    assert rss.growth < max_growth, f"server RSS grew {rss.growth / MIB:.1f} MiB"
    assert server.alive()
    return result


# --- floods of frames that ask for an answer, from a peer that does not read (CVE-2019-9512, -9515) ---


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_without_reading_is_cut_off(server, kind):
    chunk = (frame(PING, 0, 0, b"12345678") if kind == "ping" else frame(SETTINGS, 0, 0)) * 8192

    def run():
        with Attacker(server.target) as attacker:
            flood(attacker, chunk)
            attacker.read(2.0)
            return attacker.goaway_code(), attacker.closed

    code, closed = attack(server, run)
    assert code == ENHANCE_YOUR_CALM and closed


def test_request_flood_without_reading_is_bounded(server):
    body = grpc_message(message(256))

    def run():
        with Attacker(server.target) as attacker:
            first = attacker.request(1, body)
            again = attacker.request(3, body)  # the encoder's table is settled: the same bytes from here on
            block = again[9 : 9 + int.from_bytes(again[:3], "big")]
            attacker.send(first + again)
            stream_id, deadline = 5, time.monotonic() + ATTACK_S
            while time.monotonic() < deadline:
                batch = b"".join(
                    frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body)
                    for sid in range(stream_id, stream_id + 400, 2)
                )
                stream_id += 400
                if not attacker.send(batch, deadline):
                    break
            return stream_id

    sent_streams = attack(server, run)
    assert sent_streams > 1000  # the attack did get going


def test_zero_window_reader_holds_bounded_output(server):
    """48 calls of 4 MB each, answered into a window the client never opens: the server stops granting
    connection window once it holds its output limit, so the client cannot make it hold more."""
    body = grpc_message(message(1_000_000))  # 4 MB

    def run():
        with Attacker(server.target, settings={0x4: 0}) as attacker:  # our window: 0, never opened
            deadline = time.monotonic() + 3.0
            sent = 0
            for stream_id in range(1, 97, 2):
                attacker.send(frame(HEADERS, END_HEADERS, stream_id, attacker.block()))
                offset = 0
                while offset < len(body) and time.monotonic() < deadline:
                    attacker.read(0.001)
                    window = min(attacker.connection_window, attacker.stream_windows.get(stream_id, 4 * MIB), MIB)
                    if window <= 0:
                        continue
                    piece = body[offset : offset + window]
                    offset += len(piece)
                    end = END_STREAM if offset == len(body) else 0
                    attacker.send(frame(DATA, end, stream_id, piece))
                    attacker.connection_window -= len(piece)
                    attacker.stream_windows[stream_id] = attacker.stream_windows.get(stream_id, 4 * MIB) - len(piece)
                    sent += len(piece)
                if time.monotonic() >= deadline:
                    break
            return sent

    sent = attack(server, run, max_growth=96 * MIB)
    assert 8 * MIB < sent < 48 * 4_000_000  # some got through; not all 48


def test_streaming_answers_to_a_non_reader_pause_the_stream(server):
    """A bidirectional stream whose client never opens its window: once about 4 MiB of answers wait for it, the
    server takes no more of its messages, so their window stays closed and the client can send little more."""
    one = grpc_message(message(16_000))  # 64 KB requests, 64 KB answers
    stream_path = "/inference.GRPCInferenceService/ModelStreamInfer"

    def run():
        with Attacker(server.target, settings={0x4: 0}) as attacker:
            attacker.read(0.2)
            attacker.send(frame(HEADERS, END_HEADERS, 1, attacker.block(stream_path)))
            sent, deadline = 0, time.monotonic() + 2.0
            while time.monotonic() < deadline:
                attacker.read(0.005)
                window = min(attacker.connection_window, attacker.stream_windows.get(1, 4 * MIB))
                if window < len(one):
                    continue
                attacker.send(frame(DATA, 0, 1, one))
                attacker.connection_window -= len(one)
                attacker.stream_windows[1] = attacker.stream_windows.get(1, 4 * MIB) - len(one)
                sent += len(one)
            return sent

    sent = attack(server, run)
    # 4 MiB of answers queued, then at most one stream window (4 MiB) more; without the pause the client
    # could send until the connection's output limit (16 MiB) and window (16 MiB) stopped it
    assert 4 * MIB < sent < 12 * MIB, f"{sent / MIB:.1f} MiB sent"


def test_streams_beyond_the_advertised_limit_are_refused(server):
    def run():
        with Attacker(server.target) as attacker:
            attacker.read(0.2)
            first = frame(HEADERS, END_HEADERS, 1, attacker.block())
            block = attacker.block()  # all indexed now
            opens = b"".join(frame(HEADERS, END_HEADERS, sid, block) for sid in range(3, 2 * 1500, 2))
            attacker.send(first + opens)
            attacker.read(1.0)
            return attacker

    attacker = attack(server, run)
    assert attacker.server_settings.get(0x3) == 1000  # MAX_CONCURRENT_STREAMS advertised
    refused = attacker.resets(REFUSED_STREAM)
    assert len(refused) == 500 and min(refused) == 2001  # the first 1000 are open; every one after is refused


def test_data_past_the_stream_window_is_a_flow_control_error(server):
    """A bidirectional stream whose messages (64 KB each, to the 50 ms sleep model) are sent without waiting for
    the server's window: the server takes what its in-flight cap allows, then the 4 MiB stream window runs out
    and the next DATA is a FLOW_CONTROL_ERROR for that stream; the connection goes on."""
    one = grpc_message(message(16_000, "sleep"))
    stream_path = "/inference.GRPCInferenceService/ModelStreamInfer"

    def run():
        with Attacker(server.target) as attacker:
            attacker.read(0.2)
            attacker.send(frame(HEADERS, END_HEADERS, 1, attacker.block(stream_path)))
            batch = frame(DATA, 0, 1, one * 15)  # just under 1 MiB per frame
            for _ in range(48):  # 46 MiB, far past the in-flight cap plus one window
                attacker.send(batch, time.monotonic() + 2)
            attacker.read(0.5)
            attacker.send(attacker.request(3, grpc_message(message(4))))  # the connection goes on
            attacker.read(1.0)
            return attacker

    attacker = attack(server, run)
    assert attacker.resets(FLOW_CONTROL_ERROR) == [1]
    assert 3 in attacker.answered() and attacker.goaway_code() is None


def test_gzip_bomb_is_refused_while_inflating(server):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()  # 256 MiB inflated
    assert len(bomb) < 300 << 10

    def run():
        with Attacker(server.target) as attacker:
            attacker.send(attacker.request(1, grpc_message(bomb, compressed=True), grpc_encoding="gzip"))
            attacker.read(1.5)
            return attacker

    attacker = attack(server, run)
    trailers = [dict(attacker.decoder.decode(p)) for kind, _, sid, p in attacker.frames if kind == HEADERS and sid == 1]
    assert trailers and trailers[-1]["grpc-status"] == "8", trailers  # RESOURCE_EXHAUSTED
    assert "decompressed message larger than" in trailers[-1]["grpc-message"]


def test_rapid_reset_is_cut_off(server):
    """HEADERS + RST_STREAM pairs as fast as they go (CVE-2023-44487): GOAWAY once over the reset budget."""

    def run():
        with Attacker(server.target) as attacker:
            first = attacker.request(1, grpc_message(message(4))) + rst(1)
            again = attacker.request(3, grpc_message(message(4)))
            block = again[9 : 9 + int.from_bytes(again[:3], "big")]
            attacker.send(first + again + rst(3))
            pairs = b"".join(frame(HEADERS, END_HEADERS, sid, block) + rst(sid) for sid in range(5, 20_005, 2))
            flood(attacker, pairs, seconds=1.0)
            attacker.read(1.0)
            return attacker

    attacker = attack(server, run)
    assert attacker.goaway_code() == ENHANCE_YOUR_CALM


def test_calls_reset_right_after_sending_are_not_run(server):
    """A call reset in the same read as its request is dropped: no answer, no work."""
    body = grpc_message(message(4))

    def run():
        with Attacker(server.target) as attacker:
            attacker.read(0.2)
            first = attacker.request(1, body)
            again = attacker.request(3, body)
            block = again[9 : 9 + int.from_bytes(again[:3], "big")]
            calls = b"".join(
                frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body) + rst(sid)
                for sid in range(5, 5 + 2 * 300, 2)
            )
            attacker.send(first + again + calls)
            attacker.read(1.0)
            return attacker

    attacker = attack(server, run)
    answered = attacker.answered() - {1, 3}
    assert {1, 3} <= attacker.answered()  # the two honest calls were answered
    assert len(answered) <= 6, f"{len(answered)} of 300 reset calls were still answered"
    assert attacker.goaway_code() is None


def test_malformed_grpc_timeout_fails_only_its_call(server):
    body = grpc_message(message(4))
    with Attacker(server.target) as attacker:
        attacker.read(0.2)
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", INFER_PATH),
            (b":authority", attacker.authority.encode()),
            (b"content-type", b"application/grpc"),
            (b"grpc-timeout", "１０m".encode() + b"\xff"),  # fullwidth digits, then a byte that is not UTF-8
        ]
        attacker.send(
            frame(HEADERS, END_HEADERS, 1, attacker.encoder.encode(headers)) + frame(DATA, END_STREAM, 1, body)
        )
        attacker.send(attacker.request(3, body))
        attacker.read(1.0)
        blocks = {sid: dict(attacker.decoder.decode(p)) for kind, _, sid, p in attacker.frames if kind == HEADERS}
    assert blocks[1]["grpc-status"] == "3", blocks  # INVALID_ARGUMENT, for that call only
    assert attacker.goaway_code() is None and not attacker.closed
    assert 3 in blocks  # the innocent call beside it


def test_hpack_table_size_update_flood_is_a_compression_error(server):
    updates = b"\x3f\xe1\x1f" * 60_000  # "table size 4096", 60,000 times in one 180 KB block

    def run():
        with Attacker(server.target) as attacker:
            attacker.read(0.2)
            started = time.monotonic()
            attacker.send(frame(HEADERS, END_HEADERS, 1, updates))
            attacker.read(1.0)
            return attacker, time.monotonic() - started

    attacker, _ = attack(server, run)
    assert attacker.goaway_code() == COMPRESSION_ERROR


def test_two_table_size_updates_per_block_are_fine(server):
    with Attacker(server.target) as attacker:
        attacker.read(0.2)
        block = b"\x20\x3f\xe1\x1f" + attacker.block()  # size 0, then 4096: what a client that resets its table sends
        attacker.send(frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, END_STREAM, 1, grpc_message(message(4))))
        attacker.read(1.0)
    assert 1 in attacker.answered() and attacker.goaway_code() is None


def test_twenty_thousand_tiny_headers_are_refused_before_decoding(server):
    def run():
        with Attacker(server.target) as attacker:
            attacker.read(0.2)
            block = attacker.block() + b"\xbe" * 20_000  # the newest table entry, 20,000 times
            attacker.send(frame(HEADERS, END_HEADERS, 1, block))
            attacker.read(1.0)
            return attacker

    attacker = attack(server, run)
    assert attacker.goaway_code() == ENHANCE_YOUR_CALM


# --- what held before issue 11, kept holding ---


def test_continuation_flood_is_cut_off(server):
    def run():
        with Attacker(server.target) as attacker:
            attacker.send(frame(HEADERS, 0, 1, attacker.block()))
            flood(attacker, frame(CONTINUATION, 0, 1, b"\x00\x01a\x01b") * 1000, seconds=1.0)
            attacker.read(1.0)
            return attacker

    assert attack(server, run).goaway_code() == ENHANCE_YOUR_CALM


def test_empty_frame_flood_is_cut_off(server):
    def run():
        with Attacker(server.target) as attacker:
            attacker.send(frame(HEADERS, END_HEADERS, 1, attacker.block()))
            flood(attacker, frame(DATA, 0, 1) * 4096, seconds=1.0)
            attacker.read(1.0)
            return attacker

    assert attack(server, run).goaway_code() == ENHANCE_YOUR_CALM


def test_one_byte_data_frames_still_make_a_call(server):
    body = grpc_message(message(64))
    with Attacker(server.target) as attacker:
        attacker.send(frame(HEADERS, END_HEADERS, 1, attacker.block()))
        attacker.send(b"".join(frame(DATA, 0, 1, body[i : i + 1]) for i in range(len(body))))
        attacker.send(frame(DATA, END_STREAM, 1))
        attacker.read(1.0)
    assert 1 in attacker.answered() and attacker.goaway_code() is None


def test_many_idle_connections_hold_little_memory(server):
    def run():
        sockets = []
        try:
            for _ in range(500):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0))
                sockets.append(sock)
            time.sleep(0.5)
        finally:
            for sock in sockets:
                sock.close()

    attack(server, run, max_growth=48 * MIB)


def test_hpack_bomb_is_cut_off(server):
    """One 4 KB header in the table, referred to a thousand times (4 MB decoded): stopped at the hard limit."""

    def run():
        with Attacker(server.target) as attacker:
            block = attacker.encoder.encode([("x-big", "b" * 4000)]) + b"\xbe" * 900
            attacker.send(frame(HEADERS, END_HEADERS, 1, block))
            attacker.read(1.0)
            return attacker

    assert attack(server, run).goaway_code() == ENHANCE_YOUR_CALM


def test_partial_messages_past_the_connection_limit_are_reset(test_repository):
    """Request bodies that never finish, on many streams of one connection: what the connection holds for them
    is bounded by Limits.max_buffered_input (``--h2-limit``, 4 MiB here). Each stream sends 1.5 MiB of a 2 MiB
    message in two DATA frames; the two that fit are kept, every stream that goes past the limit is reset
    ENHANCE_YOUR_CALM, and a kept one still gets its answer once the rest of it arrives."""
    whole = grpc_message(message(512 * 1024))  # 2 MiB of tensor
    first, second, rest = whole[:MIB], whole[MIB : MIB + MIB // 2], whole[MIB + MIB // 2 :]
    limit = ("--h2-limit", f"max_buffered_input={4 * MIB}")
    with ServerProcess(test_repository, "--grpc-stack", "h2", *limit) as limited:

        def run():
            with Attacker(limited.target, settings={0x4: 8 * MIB}) as attacker:  # room for the 2 MiB answer
                attacker.send(frame(WINDOW_UPDATE, 0, 0, (8 * MIB).to_bytes(4, "big")))
                attacker.read(0.2)
                for sid in range(1, 17, 2):
                    attacker.send(
                        frame(HEADERS, END_HEADERS, sid, attacker.block())
                        + frame(DATA, 0, sid, first)
                        + frame(DATA, 0, sid, second)
                    )
                attacker.read(0.5)
                attacker.send(frame(DATA, END_STREAM, 1, rest))
                attacker.read(1.0)
                return attacker

        attacker = attack(limited, run)
    blocks = {sid: dict(attacker.decoder.decode(p)) for kind, _, sid, p in attacker.frames if kind == HEADERS}
    assert sorted(attacker.resets(ENHANCE_YOUR_CALM)) == list(range(5, 17, 2))
    assert blocks[1]["grpc-status"] == "0", blocks  # the kept call, completed, is answered
    assert attacker.goaway_code() is None and not attacker.closed
