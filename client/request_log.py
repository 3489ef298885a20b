"""The opt-in per-request log (``tailmark run --per-request-log``): one JSON line per measured request.

Each line holds the request's scenario and traffic class, its three instants in ns **relative to the run's
start** (the recorder's origin, the same as ``latency.hlog``'s interval times), its status and the size of the
request as sent, in bytes::

    {"scenario":"server","class":"default","intended_ns":2000113409,"sent_ns":2000154881,"done_ns":2001022345,"status":"OK","request_bytes":4160}
    {"scenario":"server","class":"default","intended_ns":2012991007,"sent_ns":2012993870,"done_ns":2013002417,"status":"UNAVAILABLE","request_bytes":4160}

A failed request has the instants its caller could give: the recorder stamps ``done_ns`` when the failure is
counted, and the dispatcher passes ``intended_ns``/``sent_ns`` (``null`` when a caller does not).
``request_bytes`` is the encoded request the transport was handed (0 when a caller does not say). Warm-up
requests are not measured, so they are not logged.

The hot path barely changes: with a log, ``Recorder.record`` appends four integers instead of three (the size);
without one it still appends three and drops the size. timeit of ``record`` without a log, old and new code
interleaved in one process, best of 7 per run, three runs on this shared 2-core VM: 417/440/439 ns before,
423/443/437 ns after (each including its share of the flush), i.e. no difference beyond the noise. The recorder
hands this sink each key's stamps when it flushes them into the histograms (every ``FLUSH_EVERY`` requests and at
every interval tick), as one int64 array; the sink subtracts the origin with numpy and formats the whole batch with
one ``%`` template per line and one ``write``. The file is flushed at every interval (``Recorder.flush_interval``),
so an interrupted run keeps every request up to the last second.

Cost, measured on this shared 2-core VM (``Recorder._flush_series`` of 16,000 buffered requests, best of 6,
twice): 0.17 µs per request without the sink, 0.90 µs with it (the formatting; the write to the page cache is
noise). At 5,000 requests/s that is about 0.4 % of one core, paid by the 100 ms tick, never by a send.
A line is about 135 bytes: 1 M requests make ~135 MB, which is why the log is off by default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Final

import numpy as np

FILE_NAME: Final = "requests.jsonl"
OK: Final = "OK"


class RequestLog:
    """Appends per-request lines to a JSONL file; fed in bulk by ``Recorder`` (see the module docstring).

    Example::

        log = RequestLog("requests.jsonl", start_ns=t0)
        log.write_ok(("server", "default"), np.array([[t0 + 5, t0 + 9, t0 + 900, 4160]], dtype=np.int64))
        log.write_errors(("server", "default"), [(t0 + 7, t0 + 8, t0 + 950, "UNAVAILABLE", 4160)])
        log.close()
    """

    def __init__(self, path: str | Path, *, start_ns: int) -> None:
        self.path = Path(path)
        self._start_ns = start_ns
        self._origin = np.array([start_ns, start_ns, start_ns, 0], dtype=np.int64)  # the size is not an instant
        self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._templates: dict[tuple[str, str], str] = {}
        self.lines = 0

    def _prefix(self, key: tuple[str, str]) -> str:
        prefix = self._templates.get(key)
        if prefix is None:
            scenario, traffic_class = key
            names = f'"scenario":{json.dumps(scenario)},"class":{json.dumps(traffic_class)},'
            prefix = self._templates[key] = "{" + names
        return prefix

    def write_ok(self, key: tuple[str, str], stamps: np.ndarray) -> None:
        """Successful requests: an (n, 4) int64 array of intended, sent, done (perf_counter_ns) and request bytes."""
        if self._file is None or not len(stamps):
            return
        template = self._prefix(key).replace("%", "%%") + (
            '"intended_ns":%d,"sent_ns":%d,"done_ns":%d,"status":"' + OK + '","request_bytes":%d}\n'
        )
        relative = (stamps - self._origin).tolist()
        self._file.write("".join([template % tuple(row) for row in relative]))
        self.lines += len(relative)

    def write_errors(self, key: tuple[str, str], rows: list[tuple[int | None, int | None, int, str, int]]) -> None:
        """Failed requests: (intended, sent, done, status name, request bytes); an unknown instant is None."""
        if self._file is None or not rows:
            return
        prefix = self._prefix(key)

        def rel(ns: int | None) -> str:
            return "null" if ns is None else str(ns - self._start_ns)

        self._file.write(
            "".join(
                f'{prefix}"intended_ns":{rel(i)},"sent_ns":{rel(s)},"done_ns":{rel(d)},'
                f'"status":{json.dumps(st)},"request_bytes":{n}}}\n'
                for i, s, d, st, n in rows
            )
        )
        self.lines += len(rows)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read(path: str | Path) -> list[dict]:
    """Every line of a request log, parsed (for tests and small runs; use a streaming reader for big ones)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
