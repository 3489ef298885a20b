"""The SSE parser: any split of a stream into reads gives the same events; a cut mid-event is an error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailmark.client.sse import SseEvent, SseParser, StreamCut

OPENAI_STREAM = (
    b'data: {"choices":[{"index":0,"text":"Hello"}],"usage":null}\n\n'
    b'data: {"choices":[{"index":0,"text":" world"}],"usage":null}\n\n'
    b": keep-alive\n\n"
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def parse_all(chunks: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events


def test_an_openai_stream_in_one_read():
    events = parse_all([OPENAI_STREAM])
    assert [e.data for e in events][-1] == "[DONE]"
    texts = [json.loads(e.data)["choices"] for e in events[:-1]]
    assert texts[0][0]["text"] == "Hello" and texts[1][0]["text"] == " world"
    assert texts[2] == [] and json.loads(events[2].data)["usage"]["completion_tokens"] == 2  # usage-only chunk
    assert len(events) == 4  # the comment dispatches nothing


def test_chunks_split_anywhere_byte_by_byte():
    assert parse_all([bytes([b]) for b in OPENAI_STREAM]) == parse_all([OPENAI_STREAM])


def test_several_events_in_one_read_come_out_in_order():
    parser = SseParser()
    assert [e.data for e in parser.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4")] == ["1", "2", "3"]
    assert parser.mid_event
    assert [e.data for e in parser.feed(b"\n\n")] == ["4"]
    parser.close()


def test_line_endings_crlf_cr_and_a_crlf_split_across_reads():
    assert [e.data for e in parse_all([b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"])] == ["a", "b", "c"]
    # CR at the end of one read, LF first in the next: one line end, not a blank line
    assert [e.data for e in parse_all([b"data: x\r", b"\ndata: y\r\n\r\n"])] == ["x\ny"]
    # ... and an empty read between the halves changes nothing (found by the property below)
    assert [e.data for e in parse_all([b"data: x\r", b"", b"\ndata: y\r\n\r\n"])] == ["x\ny"]


def test_fields_multi_line_data_event_id_comments_and_bom():
    stream = b"\xef\xbb\xbf: hello\nevent: delta\nid: 7\ndata: one\ndata:two\ndata\nretry: 10\n\n"
    (event,) = parse_all([stream[:2], stream[2:]])  # a BOM split across reads
    assert event == SseEvent("one\ntwo\n", "delta", "7")


def test_an_event_without_data_is_not_dispatched():
    assert parse_all([b"event: ping\n\n: comment only\n\n"]) == []


def test_utf8_split_inside_a_character():
    text = "naïve 日本".encode()
    body = b"data: " + text + b"\n\n"
    assert parse_all([body[:9], body[9:12], body[12:]])[0].data == "naïve 日本"


def test_a_4_mib_event_over_many_small_reads_is_one_event_and_linear_in_cost():
    text = "x" * (4 << 20)
    body = b'data: {"choices": [{"text": "' + text.encode() + b'"}]}\n\ndata: [DONE]\n\n'
    parser = SseParser()
    events = []
    for at in range(0, len(body), 16384):  # 16 KiB reads: 256+ of them inside one line
        events += parser.feed(body[at : at + 16384])
    parser.close()
    assert len(events) == 2 and json.loads(events[0].data)["choices"][0]["text"] == text


def test_a_stream_cut_inside_a_line_is_an_error():
    parser = SseParser()
    parser.feed(b'data: {"choices":[{"text":"Hel')
    parser.feed(b"lo, wor")  # more of the line, with no line end
    with pytest.raises(StreamCut, match="inside a line"):
        parser.close()


def test_a_stream_cut_between_the_fields_and_the_blank_line_is_an_error():
    parser = SseParser()
    assert parser.feed(b"data: [DONE]\n") == []
    with pytest.raises(StreamCut, match="before the blank line"):
        parser.close()


def test_a_stream_ending_on_an_event_boundary_is_not_cut():
    parser = SseParser()
    parser.feed(b"data: 1\n\n")
    assert not parser.mid_event
    parser.close()
    assert parser.events == 1


@st.composite
def streams(draw):
    """A stream of events (data lines, optional event/id fields, comments) and the events it should give."""
    text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)
    ending = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body, expected, last_id = b"", [], ""
    for _ in range(draw(st.integers(0, 6))):
        lines = [f"data: {line}".encode() for line in draw(st.lists(text, min_size=1, max_size=3))]
        kind = draw(st.sampled_from(["", "delta"]))
        if kind:
            lines.insert(0, f"event: {kind}".encode())
        if draw(st.booleans()):
            last_id = draw(st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True))
            lines.append(f"id: {last_id}".encode())
        if draw(st.booleans()):
            lines.insert(0, b": comment")
        body += b"".join(line + ending for line in lines) + ending
        data = "\n".join(line.decode()[6:] for line in lines if line.startswith(b"data: "))
        expected.append(SseEvent(data, kind or "message", last_id))
    return body, expected


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_property_any_split_gives_the_events_written(case, data):
    body, expected = case
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert parse_all(chunks) == expected


@settings(max_examples=100, deadline=None)
@given(streams(), st.data())
def test_property_a_truncated_stream_is_cut_or_ends_on_a_boundary(case, data):
    body, expected = case
    end = data.draw(st.integers(0, len(body)))
    parser = SseParser()
    events = parser.feed(body[:end])
    assert events == expected[: len(events)]  # never an event that was not written
    if parser.mid_event:
        with pytest.raises(StreamCut):
            parser.close()
    else:
        parser.close()
