"""The real peers' venvs (Triton, MLServer, KServe), built together the first time a test needs any of them.

Each is a separate pip install from PyPI (hundreds of MB, mostly downloads and unpacking), so building the ones
this session's tests use at once, in threads, costs about the longest build instead of their sum. conftest fills
``WANTED`` from the collected tests; a peer's own ``ensure_venv`` still builds (or reports) it alone if this did
not, so a failure here only costs the time and shows where that peer's tests skip.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

# test modules -> the peers their tests start
USERS = {
    "test_http_peers.py": ("mlserver", "kserve"),
    "test_metrics_scrape.py": ("triton",),
    "test_real_triton.py": ("triton",),
    "test_triton_generative.py": ("triton",),
    "test_triton_lm.py": ("triton",),
}
WANTED: set[str] = set()
_lock = threading.Lock()
_built = False


def note_collected(module_names: set[str]) -> None:
    for name in module_names:
        WANTED.update(USERS.get(name, ()))


def _build(kind: str) -> None:
    if kind == "triton":
        from tailmark.deploy.triton.launch import ensure_venv

        ensure_venv()
    else:
        from support.rest_peers import ensure_venv

        ensure_venv(kind)


def _try(kind: str) -> None:
    with contextlib.suppress(Exception):  # the peer's own fixture builds it again and skips with the reason
        _build(kind)


def prebuild() -> None:
    """Build every wanted peer venv not yet built, in parallel; once per session."""
    global _built
    with _lock:  # the builds run outside it: a peer's ensure_venv calling back in returns at once
        if _built or not WANTED:
            return
        _built = True
    with ThreadPoolExecutor(len(WANTED)) as pool:
        list(pool.map(_try, sorted(WANTED)))
