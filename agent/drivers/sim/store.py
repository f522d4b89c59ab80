"""The simulated world on disk: one state file (a snapshot and the changes made since), a lock file
and an append-only call log (JSON lines).

Several processes share one world (the engine tests kill a process mid-operation and resume in
another; the CLI and ``serve`` share it), so every change runs as: take the OS lock -> catch up
with what other processes appended -> mutate -> append the call record, then the change record
-> release. A change costs what it touched: the change record holds the entries the call reached
(:mod:`agent.drivers.sim.changes` notes them as the driver goes), not the world.

The file::

    SIMSTATE3 <token> <seq> <snapshot length>\\n   one text line
    <snapshot>                                     the whole state at <seq>, Python's marshal format
    <record> <record> ...                          one per change: seq+1, seq+2, ...

A record is ``<length:u32> <crc32:u32>`` and then ``marshal((seq, ops))``, an op being
``(path, value)`` (the entry as it stands) or ``(path,)`` (deleted). A record cut short by a
killed writer, or whose checksum fails, ends the file for readers; the next writer, under the
lock, truncates it before appending, so a torn tail is never followed by anything.

Why an append-only log in the state file rather than SQLite rows per entity: the state stays one
plain dict in memory (the drivers, the cached views and ``snapshot()`` read it at dict speed), a
reader whose copy is current reads the first line and stats the file, nothing more, and a reader
catching up reads only the bytes appended since its last look. One file holding snapshot and log
means there is no moment at which a reader can pair a snapshot with the wrong log.

Compaction: when the records outgrow the snapshot (and ``COMPACT_MIN_BYTES``), the writer writes
the whole state as a fresh snapshot with a new token to a temp file and ``os.replace``-s it, still
under the lock: O(world) once per O(world) bytes of changes. A reader that has the old file open
reads it to its end, consistently; its next look sees the new token and reloads. A writer killed
before the replace leaves a temp file (removed at the next open) and the old file intact.

Call log and crashes: a call record that comes with a state change carries that change's ``seq``
and is appended *before* the change record. A process killed between the two (or mid-record)
leaves a call record whose ``seq`` is above the state's (filtered out when reading) or that the
next change re-uses (the later record wins), so the log lists each change that persisted exactly
once.

Format 2 files (one marshal snapshot, rewritten whole on every change) are read; the first change
made to one writes it as format 3.
"""

from __future__ import annotations

import glob
import itertools
import json
import marshal
import os
import re
import secrets
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from agent.drivers.sim.changes import Tracked, apply, changes
from agent.errors import PermanentError
from agent.filelock import lock, unlock
from agent.gcpause import gc_paused

FORMAT = 3
READABLE = (2, 3)
_HEADER = re.compile(rb"^SIMSTATE(\d+) ([0-9a-f]+) (\d+)(?: (\d+))?\n")
_RECORD = struct.Struct("<II")
COMPACT_MIN_BYTES = 1 << 20
"""Records may reach this size before a compaction even when the snapshot is smaller: a fresh
reader replays at most a few thousand records, and a small world is not rewritten every few calls."""

VERIFY_ENV = "FA_SIM_VERIFY_CHANGES"


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
        self._file_token: str | None = None
        self._format = FORMAT
        self._records_at = 0
        """Offset of the first record (the end of the snapshot)."""
        self._end = 0
        """Offset just past the last whole record read."""
        self.seq = 0
        self.verify = os.environ.get(VERIFY_ENV) == "1"
        self._loads = 0
        self._ticks = itertools.count(1)
        self._changed_at: dict[tuple[str, ...], int] = {}
        """Container path (two keys at most: ``("vms", site)``) -> tick of its last change."""

    @property
    def token(self) -> str | None:
        """Names the state version this process holds; changes with every change."""

        return None if self._state is None else f"{self._file_token}:{self.seq}"

    def version_of(self, path: tuple[str, ...]) -> tuple[int, int]:
        """Changes whenever something at or under ``path`` (one or two keys: ``("vms", site)``)
        changed, here or in a process this one caught up with: what a value derived from one
        site's VMs is keyed by, so a change elsewhere in the world keeps it. Call with
        :attr:`mutex` held, after :meth:`current`."""

        at = self._changed_at
        return self._loads, max(at.get(path[:i], 0) for i in range(1, len(path) + 1))

    def _changed(self, ops: list[tuple[Any, ...]]) -> None:
        tick = next(self._ticks)
        for op in ops:
            self._changed_at[op[0][:2]] = tick

    # ------------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return self.path.exists()

    def _header(self, head: bytes) -> re.Match[bytes]:
        m = _HEADER.match(head)
        if m is None:
            raise StateFileError(f"{self.path} is not a simulator state file", file=str(self.path))
        fmt = int(m.group(1))
        if fmt not in READABLE or (fmt == 3) != (m.group(4) is not None):
            raise StateFileError(
                f"{self.path} has state format {fmt}, this simulator reads {', '.join(map(str, READABLE))}; "
                "reset the world to re-seed it from the inventory",
                file=str(self.path),
            )
        return m

    def current(self) -> dict[str, Any]:
        """The state, caught up with what another process (or another store on the same file)
        changed. Call with :attr:`mutex` held; mutate it only inside :meth:`locked`, through
        :meth:`begin`."""

        try:
            with open(self.path, "rb") as fh:
                self._refresh(fh)
        except FileNotFoundError:
            raise StateFileError(f"{self.path} does not exist", file=str(self.path)) from None
        assert self._state is not None
        return self._state

    def current_seq(self) -> int:
        with self.mutex:
            if not self.exists():
                return 0
            self.current()
            return self.seq

    def _refresh(self, fh: BinaryIO) -> None:
        m = self._header(fh.read(128))
        if self._state is None or m.group(2).decode() != self._file_token:
            self._load(fh)
            return
        size = os.fstat(fh.fileno()).st_size
        if size == self._end or self._format != 3:
            return  # nothing appended since the last look: nothing read but the first line
        # Past the last whole record: new records, or a torn tail (read again each time: a writer
        # may have cut it and appended a record of the very same length).
        fh.seek(self._end)
        try:
            self._replay(fh.read(), self._end, self._state)
        except BaseException:
            self.invalidate()
            raise

    def _load(self, fh: BinaryIO) -> None:
        self._state, self._file_token = None, None
        self._loads += 1
        self._changed_at.clear()
        fh.seek(0)
        data = fh.read()
        m = self._header(data[:128])
        try:
            fmt, seq = int(m.group(1)), int(m.group(3))
            body_end = m.end() + int(m.group(4)) if fmt == 3 else len(data)
            with gc_paused():
                state = marshal.loads(data[m.end():body_end])
            if not isinstance(state, dict):
                raise ValueError("the snapshot is not a state")
        except (ValueError, EOFError, TypeError) as exc:
            raise StateFileError(f"cannot read simulator state {self.path}: {exc}; reset the world to re-seed "
                                 "it from the inventory", file=str(self.path)) from exc
        self._format, self._records_at, self._end, self.seq = fmt, body_end, body_end, seq
        if fmt == 3:
            self._replay(data[body_end:], body_end, state)
        self._state, self._file_token = state, m.group(2).decode()

    def _replay(self, buf: bytes, at: int, state: dict[str, Any]) -> None:
        """Applies the whole records of ``buf`` (the file from offset ``at``); stops at a torn one."""

        pos, n = 0, len(buf)
        while pos + _RECORD.size <= n:
            length, crc = _RECORD.unpack_from(buf, pos)
            body = buf[pos + _RECORD.size: pos + _RECORD.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break  # cut short by a killed writer (or being written now): not there yet
            try:
                seq, ops = marshal.loads(body)
            except (ValueError, EOFError, TypeError):
                break
            if seq != self.seq + 1:
                raise StateFileError(f"simulator state {self.path} is damaged: change {seq} follows {self.seq}; "
                                     "reset the world to re-seed it from the inventory", file=str(self.path))
            apply(state, ops)
            self._changed(ops)
            self.seq = seq
            pos += _RECORD.size + length
        self._end = at + pos

    def invalidate(self) -> None:
        """Forget the cached state (after a failed change left it half-mutated)."""

        self._state, self._file_token = None, None

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

    def begin(self) -> Tracked:
        """The current state, to change and then :meth:`commit`. Call inside :meth:`locked`."""

        return Tracked(self.current())

    def commit(self, change: Tracked, record: dict[str, Any] | None) -> int:
        """Persist what ``change`` touched as the next version; ``record`` (a call record) goes to
        the call log first, with that version's ``seq``. Call inside :meth:`locked`, after
        :meth:`begin`. Returns the new ``seq``."""

        state, seq = change.raw, self.seq + 1
        assert state is self._state, "commit() of a state that is not this store's current one"
        try:
            if record is not None:
                self.append_log({**record, "seq": seq})
            if self._format != FORMAT:
                self._write_snapshot(state, seq)  # converts a format 2 file
            else:
                self._append_change(seq, changes(state, change.touched))
                if self._end - self._records_at > max(self._records_at, COMPACT_MIN_BYTES):
                    self._write_snapshot(state, seq)
        except BaseException:
            self.invalidate()
            raise
        if self.verify:
            self._check_against_file()
        return seq

    def replace_all(self, state: dict[str, Any], record: dict[str, Any] | None) -> int:
        """Persist ``state`` whole as the next version (seeding, reset). Call inside :meth:`locked`."""

        seq = self.seq + 1
        try:
            if record is not None:
                self.append_log({**record, "seq": seq})
            self._write_snapshot(state, seq)
        except BaseException:
            self.invalidate()
            raise
        return seq

    def _append_change(self, seq: int, ops: list[tuple[Any, ...]]) -> None:
        self._changed(ops)  # before the write: a failed one drops the state, and with it the version
        body = marshal.dumps((seq, ops))
        data = _RECORD.pack(len(body), zlib.crc32(body)) + body
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        try:
            size = os.fstat(fd).st_size
            if size != self._end:
                if size < self._end:
                    raise StateFileError(f"simulator state {self.path} shrank under the lock", file=str(self.path))
                os.ftruncate(fd, self._end)  # the torn tail of a writer that was killed mid-record
            _write_all(fd, data)
        finally:
            os.close(fd)
        self.seq, self._end = seq, self._end + len(data)

    def _write_snapshot(self, state: dict[str, Any], seq: int) -> None:
        token = secrets.token_hex(16)
        body = marshal.dumps(state)
        head = f"SIMSTATE{FORMAT} {token} {seq} {len(body)}\n".encode()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(head)
                fh.write(body)
            # Nothing here is fsynced: the simulated sites must survive a killed agent process
            # (the page cache does, and os.replace is atomic), not a power cut of the test
            # machine; an fsync per call would be harness cost in every benchmark.
            _replace(tmp, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        self._loads += 1  # what the snapshot holds is not ticked per container: derived values start again
        self._changed_at.clear()
        self._state, self._file_token, self._format, self.seq = state, token, FORMAT, seq
        self._records_at = self._end = len(head) + len(body)

    def _check_against_file(self) -> None:
        """What another process would read equals what this one holds (``FA_SIM_VERIFY_CHANGES``)."""

        fresh = StateStore(self.path)
        with open(self.path, "rb") as fh:
            fresh._load(fh)
        if fresh._state != self._state or fresh.seq != self.seq:
            assert self._state is not None and fresh._state is not None
            differ = sorted(k for k in self._state.keys() | fresh._state.keys()
                            if self._state.get(k) != fresh._state.get(k))
            raise AssertionError(f"the simulator's change record missed a mutation of {differ} (seq {self.seq}): "
                                 "an entry was changed without being fetched by key (see agent/drivers/sim/changes.py)")

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _replace(src: str, dst: Path) -> None:
    for attempt in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:  # Windows: a reader has the target open for a moment
            if os.name != "nt" or attempt == 49:
                raise
            time.sleep(0.02)
