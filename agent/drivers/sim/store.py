"""The simulated world on disk: one state file, a lock file and an append-only call log (JSON lines).

Several processes share one world (the engine tests kill a process mid-operation and resume in
another), so every change runs as: take the OS lock -> reload the state if another process wrote
it -> mutate -> write a temp file, append the call record, ``os.replace`` -> release. A
reader never sees a half-written file: ``os.replace`` swaps whole files.

The state file starts with a line ``SIMSTATE<format> <token> <seq>`` so a process can tell from its
first bytes whether its cached copy is current without reading megabytes.

Call log and crashes: a record that comes with a state change carries that change's ``seq`` and
is appended *before* the state file is replaced. A process killed between the two leaves a record
whose ``seq`` is above the state's (filtered out when reading) or that the next change re-uses
(the later record wins), so the log lists each change that persisted exactly once.
"""

from __future__ import annotations

import glob
import json
import marshal
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from agent.errors import PermanentError
from agent.filelock import lock, unlock
from agent.gcpause import gc_paused

FORMAT = 2
_HEADER = re.compile(rb"^SIMSTATE(\d+) ([0-9a-f]+) (\d+)\n")
"""A text line naming the format, the version's token and its seq, then the state in Python's
``marshal`` format: an order of magnitude faster to write than JSON, which matters because every
change rewrites the whole state under the lock, and only plain dicts, lists, strings and numbers
ever go in (``marshal`` builds data, it never runs code). ``SimWorld.snapshot()`` gives the
readable view."""

class StateFileError(PermanentError):
    """The state file cannot be used (unreadable, not the simulator's, another format)."""

    code = "sim_state_invalid"


class StateStore:
    """One state file shared by threads and processes. Not a port: the world's private seam."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.calls_path = path.with_name(path.name + ".calls.jsonl")
        self.mutex = threading.RLock()
        """Held around any use of :meth:`current`'s dict within this process."""
        self._state: dict[str, Any] | None = None
        self.token: str | None = None
        self.seq = 0

    # ------------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return self.path.exists()

    def _header(self) -> tuple[str, int] | None:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(96)
        except FileNotFoundError:
            return None
        m = _HEADER.match(head)
        if m is None:
            raise StateFileError(f"{self.path} is not a simulator state file", file=str(self.path))
        if int(m.group(1)) != FORMAT:
            raise StateFileError(
                f"{self.path} has state format {int(m.group(1))}, this simulator writes {FORMAT}; "
                "reset the world to re-seed it from the inventory",
                file=str(self.path),
            )
        return m.group(2).decode(), int(m.group(3))

    def current(self) -> dict[str, Any]:
        """The state, reloaded if another process (or another store on the same file) changed it.

        Call with :attr:`mutex` held; mutate it only inside :meth:`locked`.
        """

        head = self._header()
        if head is None:
            raise StateFileError(f"{self.path} does not exist", file=str(self.path))
        if self._state is None or head[0] != self.token:
            self._load()
        assert self._state is not None
        return self._state

    def current_seq(self) -> int:
        head = self._header()
        return head[1] if head else 0

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
            m = _HEADER.match(data)
            if m is None or int(m.group(1)) != FORMAT:
                raise ValueError("not a simulator state file of this format")
            with gc_paused():
                state = marshal.loads(data[m.end():])
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise StateFileError(f"cannot read simulator state {self.path}: {exc}; reset the world to re-seed "
                                 "it from the inventory", file=str(self.path)) from exc
        self._state, self.token, self.seq = state, m.group(2).decode(), int(m.group(3))

    def invalidate(self) -> None:
        """Forget the cached state (after a failed change left it half-mutated)."""

        self._state, self.token = None, None

    # ------------------------------------------------------------------------ writing

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The cross-process lock (and this process's mutex). Opened per use: a lock inherited
        through ``fork`` would be shared with the parent and exclude nothing."""

        with self.mutex:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                lock(fd)
                try:
                    yield
                finally:
                    unlock(fd)
            finally:
                os.close(fd)

    def commit(self, state: dict[str, Any], record: dict[str, Any] | None) -> int:
        """Persist ``state`` as the next version; ``record`` (a call record) goes to the log with
        that version's ``seq``. Call inside :meth:`locked`. Returns the new ``seq``."""

        seq, token = self.seq + 1, secrets.token_hex(16)
        head = f"SIMSTATE{FORMAT} {token} {seq}\n".encode()
        body = marshal.dumps(state)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(head)
                fh.write(body)
            # Neither the state nor the log is fsynced: the simulated sites must survive a killed
            # agent process (the page cache does, and os.replace is atomic), not a power cut of
            # the test machine; an fsync per call would be harness cost in every benchmark.
            if record is not None:
                self.append_log({**record, "seq": seq})
            _replace(tmp, self.path)
        except BaseException:
            self.invalidate()
            with suppress(OSError):
                os.unlink(tmp)
            raise
        self._state, self.token, self.seq = state, token, seq
        return seq

    def _temp_files(self) -> list[Path]:
        return list(self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"))

    def has_stale_temp_files(self) -> bool:
        return bool(self._temp_files())

    def remove_stale_temp_files(self) -> None:
        """Temp files of writers that died before ``os.replace``. Call inside :meth:`locked`."""

        for p in self._temp_files():
            with suppress(OSError):
                p.unlink()

    # ----------------------------------------------------------------------- call log

    def append_log(self, record: dict[str, Any]) -> None:
        # One write() on an O_APPEND descriptor: lines from concurrent processes never interleave.
        data = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        fd = os.open(self.calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def truncate_log(self) -> None:
        with open(self.calls_path, "wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> list[dict[str, Any]]:
        """The call records, each change once (see the module docstring), in log order."""

        try:
            raw = self.calls_path.read_bytes()
        except FileNotFoundError:
            return []
        seq_now = self.current_seq()
        records: list[dict[str, Any] | None] = []
        where: dict[int, int] = {}
        for line in raw.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash mid-write
            seq = rec.get("seq")
            if seq is not None:
                if seq > seq_now:
                    continue
                if seq in where:
                    records[where[seq]] = None
                where[seq] = len(records)
            records.append(rec)
        return [r for r in records if r is not None]


def _replace(src: str, dst: Path) -> None:
    for attempt in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:  # Windows: a reader has the target open for a moment
            if os.name != "nt" or attempt == 49:
                raise
            time.sleep(0.02)


