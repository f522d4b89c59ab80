"""A power cut keeps only what SQLite had synced to disk: the store must hold a DNS snapshot and
a grant before the outside change they guard, or the resumed failover snapshots its own changes
as the originals and commit, cancel and failback put back the wrong thing.

The power cut is modelled on SQLite's documented WAL behaviour: with ``synchronous=FULL`` the
WAL is synced at every commit (all committed transactions survive); with ``NORMAL`` only at a
checkpoint (what was committed since the last checkpoint is lost). The store's files are copied
as the cut would leave them at the moment the agent makes the guarded change; the change is
made; the agent dies; the next agent starts on the copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.domain.model import RecordType
from agent.engine.model import OperationKind, OpStatus
from tests.integration.test_engine_reserve import assert_journal_is_vmm, failover_ip, granted_to, records, take
from tests.integration.test_engine_reserve import templates as jump_templates  # noqa: F401 -- a fixture
from tests.rigs import Killed, Rig, Templates

FORWARD = "corp.contoso.example."


def durable_files(rig: Rig, into: Path) -> Path:
    """Copy the store as a power cut now would leave it on disk; returns the copy's directory."""
    with rig.store.engine.connect() as c:
        level = c.exec_driver_sql("PRAGMA synchronous").scalar()
    into.mkdir()
    shutil.copy(rig.store_path, into / rig.store_path.name)
    wal = rig.store_path.with_name(rig.store_path.name + "-wal")
    if level is not None and level >= 2 and wal.exists():  # FULL or EXTRA: every commit is synced
        shutil.copy(wal, into / wal.name)
    return into


def power_cut_to(rig: Rig, saved: Path) -> None:
    """The agent dies; its store files are what the disk held; a new agent starts on them."""
    rig.close()
    for suffix in ("", "-wal", "-shm"):
        rig.store_path.with_name(rig.store_path.name + suffix).unlink(missing_ok=True)
    for f in saved.iterdir():
        shutil.copy(f, rig.store_path.parent / f.name)
    rig.restart()


def cut_during(rig: Rig, port: Any, method: str, when: Callable[..., bool], saved: Path,
               monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the first call of ``port.method`` that ``when`` picks save the durable store files
    just before it acts, act, and then lose power."""
    real = getattr(port, method)

    def act(*args: Any) -> Any:
        if not saved.exists() and when(*args):
            durable_files(rig, saved)
            real(*args)
            raise Killed(f"power cut right after {method}")
        return real(*args)

    monkeypatch.setattr(port, method, act)


def checkpoint(rig: Rig) -> None:
    """What the last checkpoint put in the database file: both levels keep it."""
    with rig.store.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_power_cut_right_after_a_dns_write_keeps_its_snapshot_and_commit_gives_the_ttl_back(
        new_rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = new_rig()
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    checkpoint(rig)
    saved = tmp_path / "on-disk"
    cut_during(rig, rig.ports.dns["dns-contoso"], "apply",
               lambda zone, changes: any(c.name == f"app01.{FORWARD}" for c in changes), saved, monkeypatch)
    with pytest.raises(Killed):
        rig.through_pauses(rig.engine.run(op))
    assert records(rig, "app01", "172.16.1.10")["A"] == ("172.16.1.10",), "the change was made"

    power_cut_to(rig, saved)
    rig.resume_all()
    assert rig.engine.journal.operation(op).status == OpStatus.SUCCEEDED.value
    [snap] = [s for s in rig.engine.journal.snapshots(scope=op, kind="dns") if f"|app01.{FORWARD}|A" in s.key]
    assert snap.data == {"values": ["192.168.2.10"], "ttl": 3600}, "the original, not the agent's own write"

    commit = rig.start(OperationKind.COMMIT)
    assert commit.status == OpStatus.SUCCEEDED.value, commit.errors
    [a] = rig.ports.dns["dns-contoso"].read(FORWARD, [(f"app01.{FORWARD}", RecordType.A)])
    assert (a.ttl, a.values) == (3600, ("172.16.1.10",))


def test_a_power_cut_right_after_the_failover_ip_was_set_keeps_the_grant_it_used(
        new_rig, jump_templates: Templates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    rig = new_rig(templates=jump_templates)
    op = rig.engine.create(OperationKind.PLANNED_FAILOVER, "contoso-apps")
    take(rig.ports, "west-apps-pool", "172.16.1.10")  # app01 gets another address
    checkpoint(rig)
    saved = tmp_path / "on-disk"
    cut_during(rig, rig.ports.hyperv["contoso-west"], "set_failover_configs",
               lambda host, configs: any(c.vm == "app01" for c in configs), saved, monkeypatch)
    with pytest.raises(Killed):
        rig.through_pauses(rig.engine.run(op))

    power_cut_to(rig, saved)
    rig.resume_all()

    assert rig.engine.journal.operation(op).status == OpStatus.SUCCEEDED.value
    [granted] = granted_to(rig, "app01")
    assert failover_ip(rig, "app01") == [granted]
    assert records(rig, "app01", granted) == {"A": (granted,), "PTR": ("app01.corp.contoso.example.",)}
    assert_journal_is_vmm(rig)
