"""Rigs for the operations-engine tests: one agent on one pair of files, and ways to look at it.

A *rig* is one agent on one pair of files: a SQLite store and a simulator state file (with its
call log beside it) -- or, given a store URL (``tests/stores.py``), a PostgreSQL database in place
of the SQLite file. ``rig.restart()`` drops the engine, drivers and store -- as a killed agent
would -- and opens new ones on the same two files, which is exactly what an agent restarted by
its service manager sees.

Speed: parsing the demo's YAML and seeding the simulator cost more than running a whole
operation, and the recovery tests build a hundred rigs. So the demo config is copied and loaded
once per session, and each rig starts from copies of a freshly seeded state file and a freshly
migrated store (``Templates``). Each rig still gets files of its own under the test's
``tmp_path`` (xdist-safe).

The fixtures that hand rigs to tests (``demo``, ``new_rig``) live in ``tests/conftest.py``.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from agent.configfile import LoadedConfig, load_config
from agent.engine.model import OperationKind, OperationView, OpStatus
from agent.engine.service import Engine
from agent.engine.steps import AwaitFailoverArgs, parse_args
from agent.engine.store import Store
from agent.ports import Ports
from agent.wiring import Connection, connect

if TYPE_CHECKING:
    from agent.wiring import SimulatedSites as SimWorld

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DEMO_PLAN = "contoso-apps"
ACTOR = "alice@test"
WAITING = OpStatus.WAITING.value

R = TypeVar("R")

OP_ID = re.compile(r"op-[0-9a-f]{12}")


def no_sleep(_seconds: float) -> None:
    """The engine's retry backoff, made instant."""


class Killed(BaseException):
    """Raised by a crash hook to stop the engine where it stands, like ``kill -9`` would: not an
    ``Exception``, so no ``except Exception`` in the engine journals it as a step failure."""


def kill_at(phase: str, step: str) -> Callable[[str, str], None]:
    """A crash hook that kills the engine the first time it reaches (``phase``, ``step``)."""

    fired = []

    def hook(p: str, s: str) -> None:
        if (p, s) == (phase, step) and not fired:
            fired.append(True)
            raise Killed(f"{phase} of {step}")

    return hook


# ------------------------------------------------------------------------------ configs


def open_store(where: Path | str) -> Store:
    """A store on a SQLite file (a path) or at a SQLAlchemy URL (a string)."""
    return Store.open(where) if isinstance(where, str) else Store.for_path(where)


def copy_demo(into: Path, *, edit: Callable[[dict[str, Any]], None] | None = None,
              inventory: str | None = None, store_url: str | None = None) -> Path:
    """Copy config/demo.yaml (and its inventory) into ``into``; ``edit`` may change the config
    (as a dict) first; ``inventory`` replaces the inventory's YAML text; ``store_url`` puts the
    config's store there (``store.url``). Returns the config path."""

    into.mkdir(parents=True, exist_ok=True)
    text = (CONFIG_DIR / "demo.yaml").read_text()
    if edit is not None or store_url is not None:
        data = yaml.safe_load(text)
        if edit is not None:
            edit(data)
        if store_url is not None:
            data.setdefault("store", {})["url"] = store_url
        text = yaml.safe_dump(data, sort_keys=False)
    (into / "demo.yaml").write_text(text)
    (into / "demo-inventory.yaml").write_text(
        inventory if inventory is not None else (CONFIG_DIR / "demo-inventory.yaml").read_text())
    return into / "demo.yaml"


CONFIG_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "config"


def config_fixture(name: str, tmp_path: Path) -> Path:
    """A config of ``tests/fixtures/config`` copied beside the demo inventory and the fixtures'
    own inventories (the configs name them by file name). Returns the copy's path."""
    work = tmp_path / "cfg"
    work.mkdir(exist_ok=True)
    shutil.copy(CONFIG_DIR / "demo-inventory.yaml", work)
    for extra in CONFIG_FIXTURES.glob("*-inventory.yaml"):
        shutil.copy(extra, work)
    return Path(shutil.copy(CONFIG_FIXTURES / name, work))


@dataclass
class Templates:
    """A loaded config with a freshly seeded simulator state and a freshly migrated store, to copy."""

    loaded: LoadedConfig
    sim_state: Path
    store: Path | str
    """A SQLite file copied for each rig, or a store URL every rig of these templates shares."""

    @classmethod
    def build(cls, config_path: Path, *, store_url: str | None = None) -> Templates:
        """``store_url``: the rigs' store is that (empty) database, not a SQLite file of their own.
        It is shared, as two agents share one server's database: a test on a server store
        builds one Templates per database (``store_url`` fixture) and runs its rigs in turn."""
        loaded = load_config(config_path)
        base = config_path.parent / "template"
        base.mkdir()
        sim_state = base / "sim-state.json"
        connect(replace(loaded, simulator_state=sim_state)).close()  # seeds it
        store: Path | str = store_url if store_url is not None else base / "agent.sqlite"
        open_store(store).close()
        return cls(loaded, sim_state, store)

    def copy_to(self, where: Path) -> tuple[Path, Path | str]:
        where.mkdir(parents=True, exist_ok=True)
        for p in self.sim_state.parent.iterdir():
            shutil.copy(p, where / p.name)
        if isinstance(self.store, str):
            return where / self.sim_state.name, self.store
        return where / self.sim_state.name, where / self.store.name

    def after(self, where: Path, prepare: Callable[[Rig], R]) -> tuple[Templates, R]:
        """Templates of the files as ``prepare`` left them on a rig of their own (e.g. with an
        operation created, or run), with what ``prepare`` returned: a hundred tests that each
        start from that point copy it instead of redoing it."""
        state, store = self.copy_to(where)
        rig = Rig(self.loaded, state, store)
        try:
            found = prepare(rig)
        finally:
            rig.close()
        return Templates(self.loaded, state, store), found


@dataclass
class Rig:
    """One agent (engine + drivers + store) on a store file and a simulator state file."""

    loaded: LoadedConfig
    state_path: Path
    store_path: Path | str
    """The SQLite file, or the SQLAlchemy URL of the store."""
    sleep: Callable[[float], None] = no_sleep
    crash_hook: Callable[[str, str], None] | None = None
    scheduler: Any = None
    connection: Connection = field(init=False)
    store: Store = field(init=False)
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self._open()

    def _open(self) -> None:
        self.connection = connect(replace(self.loaded, simulator_state=self.state_path))
        self.store = open_store(self.store_path)
        self.engine = Engine(self.loaded.config, self.connection.ports, self.store, sleep=self.sleep,
                             crash_hook=self.crash_hook, scheduler=self.scheduler)

    @property
    def ports(self) -> Ports:
        return self.connection.ports

    @property
    def world(self) -> SimWorld:
        return sim_of(self.connection)

    @property
    def config(self):
        return self.loaded.config

    def restart(self, *, crash_hook: Callable[[str, str], None] | None = None, scheduler: Any = None) -> Rig:
        """A new agent on the same files (the old one is dropped, not shut down cleanly)."""
        self.close()
        self.crash_hook, self.scheduler = crash_hook, scheduler
        self._open()
        return self

    def close(self) -> None:
        self.connection.close()
        self.store.close()

    # -------------------------------------------------------------------- operating

    def start(self, kind: OperationKind, plan: str | None = DEMO_PLAN, **kwargs: Any) -> OperationView:
        """Start an operation and resume it through every manual pause, as an operator would."""
        return self.through_pauses(self.engine.start(kind, plan, **kwargs))

    def through_pauses(self, view: OperationView) -> OperationView:
        for _ in range(50):
            if view.status != WAITING:
                return view
            view = self.engine.resume(view.id, actor=ACTOR)
        raise AssertionError(f"{view.id} keeps waiting: {view.waiting_for}")

    def resume_all(self) -> list[OperationView]:
        """What an agent does at start-up, then an operator resuming each manual pause."""
        views = self.engine.resume_unfinished()
        waiting = [op.id for op in self.engine.operations(status=[WAITING])]
        return views + [self.through_pauses(self.engine.resume(op_id, actor=ACTOR)) for op_id in waiting]


# ------------------------------------------------------------------------ observing


def sim_of(connection: Connection) -> SimWorld:
    """The simulated sites behind a connection (every test config here is simulated)."""
    world = connection.simulator
    assert world is not None, "this config has no simulated sites"
    return world


def normalised(snapshot: Any) -> Any:
    """A world snapshot with what differs between two runs of the same operations made equal:
    operation ids (in grant and network descriptions) and the random ids Hyper-V gives the NICs
    of test VMs (replaced by ``<test vm>/<nic>``, so a grant still shows which NIC holds it)."""

    test_nics = {}
    if isinstance(snapshot, dict) and isinstance(snapshot.get("vms"), dict):
        test_nics = {nic["id"]: f"{name}/{nic['name']}" for vms in snapshot["vms"].values()
                     for name, vm in vms.items() if vm.get("role") == "test" for nic in vm["nics"]}

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, str):
            return test_nics.get(value) or OP_ID.sub("op-*", value)
        return value

    return norm(snapshot)


Effect = tuple[str, str, str]
"""(call kind, target, item key): ``("hyperv.replicate.failover", "hv-west-01", "sql01")``."""


def changes(world: SimWorld, since: int = 0) -> Counter[Effect]:
    """How many times each item was changed, per call kind and target, over the calls from index
    ``since`` of the world's call log (every process's calls, a killed one's included)."""

    out: Counter[Effect] = Counter()
    for call in world.calls()[since:]:
        for key in call.changed:
            out[(call.kind, call.target, key)] += 1
    return out


# ----------------------------------------------------------------------- the orchestrator


def play_orchestrator(engine: Engine, ports: Ports, op_id: str) -> list[str]:
    """What an outside orchestrator does in network-only mode when the agent waits for it: for
    the waiting step's VMs, a failover (shut the source down, prepare, fail over, start the
    replica) or, for a test failover, the start of the test failover. Returns the VMs moved."""

    op = engine.journal.operation(op_id)
    moved: list[str] = []
    for row in engine.journal.steps(op_id):
        if row.status != "waiting" or row.action != "hyperv.await_failover":
            continue
        args = parse_args(AwaitFailoverArgs, row.spec, row.spec_version, step=row.name)
        assert isinstance(args, AwaitFailoverArgs)
        source_host = {vm.name: vm.host for vm in ports.vmm[op.source_site].read_inventory().vms}
        src, dst = ports.hyperv[op.source_site], ports.hyperv[op.target_site]
        for it in args.items:
            if args.require_test_vm:
                dst.replicate(it.host, "start_test", [it.vm])
            else:
                src.set_power(source_host[it.vm], "stop", [it.vm])
                src.replicate(source_host[it.vm], "prepare", [it.vm])
                dst.replicate(it.host, "failover", [it.vm])
                dst.set_power(it.host, "start", [it.vm])
            moved.append(it.vm)
    return moved


def run_cli(*args: str, input: str | None = None) -> Any:
    """``failover-agent ARGS`` in this process, as a site admin would type it (``input``: what they
    answer); exceptions are not caught, so a crash is a test failure with its traceback."""

    from typer.testing import CliRunner

    from agent.cli import app

    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
