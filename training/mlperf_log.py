"""``:::MLLOG`` lines written with ``mlperf_logging.mllog``, to one result file, from rank 0 only.

Each run gets its own ``logging.Logger`` (not registered with ``logging.getLogger``, so nothing global changes)
and its own ``MLLogger``; lines are flushed as they are written, so an interrupted run leaves every line so far.
Other ranks get a disabled ``RunLog`` whose calls do nothing, as the reference implementations log on rank 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger

__all__ = ["C", "RunLog"]

# report call sites relative to the folder that holds the package, e.g. "training/harness.py"
_ROOT_DIR = str(Path(__file__).resolve().parent.parent)


class RunLog:
    """The MLPerf log of one run. ``event``/``start``/``end`` mirror ``MLLogger`` and report the caller's line."""

    def __init__(self, path: Path | None, *, enabled: bool = True, echo: bool = False) -> None:
        self.path = path
        self.enabled = enabled and (path is not None or echo)
        logger = logging.Logger(f"tailmark.mllog.{path}", level=logging.INFO)
        self._handlers: list[logging.Handler] = []
        if self.enabled and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
        if self.enabled and echo:
            self._handlers.append(logging.StreamHandler())
        for handler in self._handlers:
            logger.addHandler(handler)
        # stack offset 2: the line reported is the caller of RunLog's method, not RunLog itself
        self._mllogger = MLLogger(logger=logger, default_stack_offset=2, root_dir=_ROOT_DIR)

    def event(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> None:
        if self.enabled:
            self._mllogger.event(key=key, value=value, metadata=metadata)

    def start(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> None:
        if self.enabled:
            self._mllogger.start(key=key, value=value, metadata=metadata)

    def end(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> None:
        if self.enabled:
            self._mllogger.end(key=key, value=value, metadata=metadata)

    def close(self) -> None:
        for handler in self._handlers:
            handler.close()
        self._handlers.clear()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
