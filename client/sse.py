"""An incremental Server-Sent Events parser: bytes in as they arrive, whole events out.

The rules are the WHATWG ``text/event-stream`` ones: lines end with CRLF, LF or CR (a CR at the end of one
read may be the first half of a CRLF split across reads); a line starting with ``:`` is a comment; a
``field: value`` line drops one space after the colon; ``data`` lines join with newlines; a blank line ends
an event, and an event with no ``data`` is not dispatched. A UTF-8 BOM at the very start is skipped.

A stream that ends while an event is half received (a partial line, or field lines with no blank line
after them) is not a quiet end: ``close()`` raises ``StreamCut``, so a connection dropped mid-answer counts as
a failure, never as a shorter success. (The spec discards such an event; a benchmark must not.)

Lines are split as bytes and decoded one by one: a CR or LF byte never occurs inside a UTF-8 multi-byte
character, so a character split across reads is whole again by the time its line ends.

Example::

    >>> parser = SseParser()
    >>> parser.feed(b'data: {"a"')
    []
    >>> parser.feed(b': 1}\\n\\ndata: [DONE]\\n\\n')
    [SseEvent(data='{"a": 1}', event='message', id=''), SseEvent(data='[DONE]', event='message', id='')]
    >>> parser.close()
"""

from __future__ import annotations

import re
from typing import NamedTuple

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class StreamCut(Exception):
    """The stream ended in the middle of an event."""


class SseEvent(NamedTuple):
    data: str
    event: str = "message"  # the ``event:`` field, "message" when absent
    id: str = ""  # the last ``id:`` seen so far (it persists across events, as in the spec)


class SseParser:
    """Feed it the body's bytes in any split; it returns each event once its blank line has arrived."""

    __slots__ = ("_at_start", "_data", "_event", "_fields", "_id", "_partial", "_pieces", "_skip_lf", "events")

    def __init__(self) -> None:
        self._partial = b""  # an unfinished line
        self._pieces: list[bytes] = []  # more of it, from reads that held no line end (joined once, not per read)
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._fields = False  # a field line arrived since the last blank line
        self._skip_lf = False  # the last read ended with CR: an LF first in the next one is its CRLF's half
        self._at_start = True  # the BOM may only come first
        self.events = 0  # events dispatched so far

    @property
    def mid_event(self) -> bool:
        """Part of an event has arrived and its end has not."""
        return bool(self._partial or self._pieces) or self._fields

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that ``chunk`` completes, in order (possibly none)."""
        if not chunk:  # (an empty read must not use up a pending CR's LF)
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._partial and not self._at_start and b"\n" not in chunk and b"\r" not in chunk:
            self._pieces.append(bytes(chunk))  # a long line arriving over many reads: no quadratic copying
            return []
        if self._pieces:
            self._partial += b"".join(self._pieces)
            self._pieces.clear()
        buffer = self._partial + chunk if self._partial else bytes(chunk)
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._partial = buffer  # too early to tell a BOM from text
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        lines = _LINE_END.split(buffer) if b"\r" in buffer else buffer.split(b"\n")
        self._partial = lines.pop()  # after the last line end: unfinished ("" if the read ended a line)
        if buffer.endswith(b"\r"):
            self._skip_lf = True
        out: list[SseEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(SseEvent("\n".join(self._data), self._event or "message", self._id))
                    self.events += 1
                self._data, self._event, self._fields = [], "", False
                continue
            if line[0] == 0x3A:  # ":" a comment (keep-alive pings)
                continue
            self._fields = True
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value.decode("utf-8", errors="replace"))
            elif name == b"event":
                self._event = value.decode("utf-8", errors="replace")
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", errors="replace")
            # "retry" and unknown fields: nothing for a client that never reconnects
        return out

    def close(self) -> None:
        """The body ended: ``StreamCut`` if it ended inside an event."""
        if self.mid_event:
            partial = self._partial[:80].decode("utf-8", errors="replace")
            inside = self._partial or self._pieces
            where = f"inside a line ({partial!r}...)" if inside else "before the blank line that ends the event"
            raise StreamCut(f"the event stream was cut mid-event: it ended {where}")
