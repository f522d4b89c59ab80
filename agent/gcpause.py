"""Pausing the cyclic garbage collector while big trees of objects are built or parsed.

Planning a 10,000-VM failover, or loading the simulator's state, allocates a few hundred thousand
long-lived objects; every collection re-walks all of them, which took half of a big plan's time
and tripled a state load. Reference counting still frees everything that is not in a cycle; the
few cycles made meanwhile are collected once the collector runs again.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block. Nested and concurrent blocks (two plans built in two
    threads) keep it paused until the last one ends; it is re-enabled only if it was enabled
    before the first one began."""

    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def freeze_survivors() -> None:
    """Move every object alive now out of the collector's sight (``gc.freeze``), after one full
    collection. For a long-running server once its start-up is done: the config, the sites, the
    modules and the app live as long as the process, yet each full collection walked all of them
    again (~200,000 objects: 120-230 ms with the GIL held, measured under a 1,000-VM failover,
    every few seconds), and every request of the API waited for it. Frozen objects are still
    freed by reference counting; only a cycle among them is never collected."""
    gc.collect()
    gc.freeze()
