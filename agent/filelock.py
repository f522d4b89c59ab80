"""An exclusive lock on an open file, across processes, on Linux and Windows: ``flock`` there,
``msvcrt.locking`` of the first byte here. The kernel drops it with the process that held it,
so a killed agent never leaves it taken. Threads of one process each open the file themselves
(a lock is per open file), so they exclude each other too."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# sys.platform, not os.name: mypy reads this check and type-checks each branch on its own platform.
if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for ~10 s, then raises
                return
            except OSError:
                continue

    def unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def locked(fd: int) -> Iterator[None]:
    lock(fd)
    try:
        yield
    finally:
        unlock(fd)
