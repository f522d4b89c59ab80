"""Stopping the serve machinery (``agent.cli.serve``) the one way, whoever asks: SIGTERM or
SIGINT on the main thread, or a :class:`StopRequest` from another thread (the Windows service,
which gets no signals). The leader ends its loop and, if it is executing, the step in hand is
interrupted: it stays journalled as started and the next leader runs it again."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.engine.leader import Leader


def stop_leader(leader: Leader, why: str, say: Callable[[str], None], *, interrupt: Callable[[], None]) -> None:
    """Idle, the leader ends within a poll; executing, the step in hand is interrupted once (a
    second stop does not cut into the way out, which releases the lease)."""
    first = not leader.stopping
    leader.stop()
    # What the API started starts no new step and ends once its steps in hand are journalled.
    leader.engine.runner.stopping.set()
    say(f"{why}: stopping")
    if leader.executing and first:
        interrupt()


class StopRequest:
    """Stops a serving leader from another thread, as SIGTERM does. Safe to call before the
    leader exists (the config still loading): it then never starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = threading.Event()
        self._leader: Leader | None = None
        self._thread: int | None = None
        self._say: Callable[[str], None] = lambda text: None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def stop(self, why: str = "stop requested") -> None:
        with self._lock:
            self._requested.set()
            if self._leader is not None:
                thread = self._thread
                stop_leader(self._leader, why, self._say, interrupt=lambda: _interrupt(thread))

    @contextmanager
    def serving(self, leader: Leader, say: Callable[[str], None]) -> Iterator[None]:
        """While the calling thread runs ``leader``: a stop reaches it, and the interruption it
        sends ends the block quietly. None is sent once the block is left; one sent just before
        may still land in the caller (the Windows service's runner expects it). A pending one is
        not cleared: CPython 3.11 then leaves its eval breaker set for good, slowing every thread."""
        with self._lock:
            self._leader, self._thread, self._say = leader, threading.get_ident(), say
            if self._requested.is_set():
                leader.stop()
        try:
            try:
                yield
            except KeyboardInterrupt:
                if not self._requested.is_set():
                    raise
        finally:
            with self._lock:
                self._leader = None


def _interrupt(thread: int | None) -> None:
    """Raise KeyboardInterrupt in ``thread`` at its next bytecode (what a signal does to the main
    thread; a blocking call it is in ends first)."""
    if thread is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(KeyboardInterrupt))
