"""Writes the seed corpus of tests/http2/test_fuzz.py: one .bin per attack or edge case, as a client would
send it after connecting (the preface included). Run it again only to change the seeds:

    .venv/bin/python tests/http2/corpus/make_corpus.py
"""

from __future__ import annotations

import struct
from pathlib import Path

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/inference.GRPCInferenceService/ModelInfer"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload


def seeds() -> dict[str, bytes]:
    encoder = hpack.Encoder()
    start = PREFACE + frame(4, 0, 0)
    first = encoder.encode(REQUEST)
    again = encoder.encode(REQUEST)  # all indexed from now on
    message = b"\x00\x00\x00\x00\x04abcd"
    rst = lambda sid: frame(3, 0, sid, struct.pack(">I", 8))  # noqa: E731
    return {
        "valid_request": start + frame(1, 4, 1, first) + frame(0, 1, 1, message) + frame(1, 5, 3, again),
        "rapid_reset": start
        + frame(1, 4, 1, first)
        + b"".join(frame(1, 4, sid, again) + rst(sid) for sid in range(3, 2203, 2)),
        "streams_past_the_limit": start
        + frame(1, 4, 1, first)
        + b"".join(frame(1, 4, s, again) for s in range(3, 2101, 2)),
        "table_size_updates": start + frame(1, 5, 1, b"\x3f\xe1\x1f" * 100 + first),
        "continuation_flood": start + frame(1, 0, 1, first) + frame(9, 0, 1, b"\x82") * 100,
        "ping_flood": start + frame(6, 0, 0, b"12345678") * 1100,
        "settings_flood": start + frame(4, 0, 0, struct.pack(">HI", 4, 1000)) * 1100,
        "empty_data_flood": start + frame(1, 4, 1, first) + frame(0, 0, 1) * 1100,
        "priority_flood": start + frame(2, 0, 1, b"\x00\x00\x00\x00\x10") * 1100,
        "tiny_headers": start + frame(1, 5, 1, first + b"\xbe" * 3000),
        "hpack_bomb": start + frame(1, 5, 1, encoder.encode([("x-big", "b" * 4000)]) + b"\xbe" * 200),
        "window_overflow": start + frame(8, 0, 0, struct.pack(">I", 2**31 - 1)) * 2,
        "data_on_idle_stream": start + frame(0, 0, 9, b"data"),
        "even_stream_from_client": start + frame(1, 4, 2, first),
        "bad_initial_window": start + frame(4, 0, 0, struct.pack(">HI", 4, 2**31)),
        "garbage_preface": b"\x16\x03\x01\x02\x00" + bytes(range(256)),
        "http1_request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "absurd_length": start + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"\x00" * 64,
        "interrupted_header_block": start + frame(1, 0, 1, first[:5]) + frame(6, 0, 0, b"12345678"),
    }


if __name__ == "__main__":
    here = Path(__file__).parent
    for name, data in seeds().items():
        (here / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin: {len(data)} bytes")
