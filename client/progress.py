"""A live progress line on stderr while a scenario runs (a line every few seconds when not a terminal)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from tailmark.client.dispatcher import Dispatcher


class Progress:
    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self._last_line = 0.0

    async def watch(self, dispatcher: Dispatcher, label: str, planned_s: float) -> None:
        """Update until cancelled; ``planned_s`` is the expected length (0: unknown)."""
        if not self.enabled:
            return
        started = time.monotonic()
        last_done, last_t = 0, started
        try:
            while True:
                await asyncio.sleep(0.5)
                now = time.monotonic()
                rate = (dispatcher.completed - last_done) / max(now - last_t, 1e-9)
                last_done, last_t = dispatcher.completed, now
                self._show(label, now - started, planned_s, dispatcher, rate)
        except asyncio.CancelledError:
            if self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()
            raise

    def _show(self, label: str, elapsed: float, planned: float, d: Dispatcher, rate: float) -> None:
        of = f"/{planned:.0f}" if planned else ""
        line = (
            f"{label}: {elapsed:5.1f}{of} s  {d.completed} done  {rate:8.1f}/s  "
            f"in flight {d.outstanding}  errors {d.failed}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif time.monotonic() - self._last_line >= 5:
            self._last_line = time.monotonic()
            print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)
