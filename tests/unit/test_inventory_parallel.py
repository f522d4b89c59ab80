"""Reading both sites concurrently (``agent.inventory``): every Hyper-V host, VMM server, router
and DNS zone of a phase is read at the same time, within the config's concurrency limits, and the
inventory -- so the plan and its checksum -- is the same whichever endpoint answers first, with
the same stale notes and left-out VMs when some cannot be read.

The ports are wrapped here (not in the simulator) to hold calls at a barrier, slow some targets
down, and count the calls in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.config import AgentConfig, Concurrency
from agent.domain.model import Inventory
from agent.domain.planning import build_plan
from agent.engine.runner import HostLimits
from agent.engine.service import Engine
from agent.errors import TransientError
from agent.inventory import gather_inventory, read_vm_states
from agent.ports import Ports
from tests.rigs import DEMO_PLAN, Rig, no_sleep

DARK = [("*", "contoso-east"), ("*", "hv-east-*"), ("*", "rtr-east")]


@dataclass
class Flights:
    """What the wrapped ports saw: calls in flight at most, overall and per target."""

    delay: Callable[[str, str], float] = lambda kind, target: 0.0
    gate: Callable[[str, tuple[Any, ...]], threading.Barrier | None] = lambda kind, args: None
    """Where a call (kind, arguments) waits until all the barrier's parties are in, if anywhere."""
    most: int = 0
    most_per_target: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    _now: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def around(self, kind: str, target: str, args: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        with self._lock:
            self.calls[(kind, target)] += 1
            self._now[""] += 1
            self._now[target] += 1
            self.most = max(self.most, self._now[""])
            self.most_per_target[target] = max(self.most_per_target[target], self._now[target])
        try:
            gate = self.gate(kind, args)
            if gate is not None:
                gate.wait(timeout=10)  # broken (an error) unless all are in flight together
            time.sleep(self.delay(kind, target))
            return fn()
        finally:
            with self._lock:
                self._now[""] -= 1
                self._now[target] -= 1


class _Watched:
    def __init__(self, port: Any, kind: str, flights: Flights) -> None:
        self._port, self._kind, self._flights = port, kind, flights

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            target = {"vmm": lambda: self._port.site, "dns": lambda: self._port.name}.get(
                self._kind, lambda: str(args[0]))()
            return self._flights.around(f"{self._kind}.{name}", target, args, lambda: attr(*args, **kwargs))

        return call


def watched(ports: Ports, flights: Flights) -> Ports:
    return Ports(vmm={k: _Watched(v, "vmm", flights) for k, v in ports.vmm.items()},  # type: ignore[misc]
                 hyperv={k: _Watched(v, "hyperv", flights) for k, v in ports.hyperv.items()},
                 dns={k: _Watched(v, "dns", flights) for k, v in ports.dns.items()},
                 routes=_Watched(ports.routes, "routes", flights), scripts=ports.scripts)  # type: ignore[arg-type]


def with_limits(config: AgentConfig, per_host: int, global_limit: int) -> AgentConfig:
    policies = config.policies.model_copy(update={"concurrency": Concurrency(per_host=per_host,
                                                                             global_limit=global_limit)})
    return config.model_copy(update={"policies": policies})


def sequential(config: AgentConfig, ports: Ports, **kwargs: Any) -> Inventory:
    """One read at a time: what reading one endpoint after another gives."""
    return gather_inventory(with_limits(config, 1, 1), ports, **kwargs)


def checksum(config: AgentConfig, inventory: Inventory, kind: str = "planned") -> str:
    return build_plan(config, inventory, DEMO_PLAN, kind).checksum()  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- overlap


def test_every_read_of_a_phase_is_in_flight_at_once(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    config = with_limits(rig.config, 16, 16)
    reference = sequential(config, rig.ports, dns_purpose="production")
    counted = Flights()
    gather_inventory(config, watched(rig.ports, counted), dns_purpose="production")
    per_kind = Counter(kind for kind, _ in counted.calls.elements())
    assert (per_kind["vmm.read_inventory"], per_kind["routes.read_routes"], per_kind["dns.read"]) == (2, 3, 4)
    hosts = per_kind["hyperv.get_replications"] + per_kind["hyperv.get_failover_configs"]
    assert hosts == 6
    # Both VMM servers, every router and the forward zone at once (its names are the config's);
    # then every Hyper-V host's two reads; then the three reverse zones (PTRs of what the hosts hold).
    first, hyperv, reverse = threading.Barrier(2 + 3 + 1), threading.Barrier(hosts), threading.Barrier(3)

    def gate(kind: str, args: tuple[Any, ...]) -> threading.Barrier | None:
        if kind == "dns.read":
            return reverse if str(args[0]).endswith(".arpa.") else first
        return {"vmm": first, "routes": first, "hyperv": hyperv}.get(kind.split(".")[0])

    flights = Flights(gate=gate)
    inventory = gather_inventory(config, watched(rig.ports, flights), dns_purpose="production")

    assert flights.most >= hosts
    assert flights.calls == counted.calls, "one call per endpoint, as before"
    assert inventory == reference
    assert checksum(config, inventory) == checksum(config, reference)


def test_the_config_limits_bound_the_reads_per_host_and_overall(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    flights = Flights(delay=lambda kind, target: 0.2)  # long enough for three to meet on a busy machine
    inventory = gather_inventory(with_limits(rig.config, 1, 3), watched(rig.ports, flights))
    assert flights.most == 3, "never more than global_limit, and that many when there is work for them"
    assert max(flights.most_per_target.values()) == 1, flights.most_per_target
    assert inventory == sequential(rig.config, rig.ports)


def test_reads_share_the_limits_of_the_engine_passed_in(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    shared = HostLimits(per_host=1, global_limit=2)
    flights = Flights(delay=lambda kind, target: 0.05)
    with shared.slot("elsewhere"):  # an operation's step holds one of the two slots meanwhile
        gather_inventory(with_limits(rig.config, 16, 16), watched(rig.ports, flights), limits=shared)
    assert flights.most == 1


# ----------------------------------------------------------------------- same result


def answering_in_order(order: list[str]) -> Callable[[str, str], float]:
    """Hosts answer in ``order`` (the first at once, each next 40 ms later)."""
    return lambda kind, target: 0.04 * order.index(target) if target in order else 0.0


HOSTS = ["hv-east-01", "hv-east-02", "hv-west-01", "hv-west-02"]


@pytest.mark.parametrize("order", [HOSTS, HOSTS[::-1], [HOSTS[2], HOSTS[0], HOSTS[3], HOSTS[1]]])
def test_the_inventory_does_not_depend_on_which_host_answers_first(new_rig: Callable[..., Rig],
                                                                    order: list[str]) -> None:
    rig = new_rig()
    # One host refuses its batch (read again VM by VM, each VM refused): its VMs are left out.
    rig.world.inject({"call": "hyperv.get_replications", "target": "hv-east-02", "fault": "permanent"})
    reference = sequential(rig.config, rig.ports)
    assert {vm for vm, _ in reference.unreadable} == {"app02", "web01"}

    inventory = gather_inventory(rig.config, watched(rig.ports, Flights(delay=answering_in_order(order))))

    assert inventory == reference
    assert checksum(rig.config, inventory, "unplanned") == checksum(rig.config, reference, "unplanned")


def test_a_dark_site_is_planned_from_its_last_read_with_the_same_notes_in_the_same_order(
        new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    rig.engine.inventory("unplanned")  # read while the site was up: remembered
    for call, target in DARK:
        rig.world.inject({"call": call, "target": target, "fault": "transient"})
    views = []
    for order in (HOSTS, HOSTS[::-1]):
        engine = Engine(rig.config, watched(rig.ports, Flights(delay=answering_in_order(order))), rig.store,
                        sleep=no_sleep)
        views.append(engine.inventory("unplanned"))
    sequential_engine = Engine(rig.config, rig.ports, rig.store, sleep=no_sleep, limits=HostLimits(1, 1))
    views.append(sequential_engine.inventory("unplanned"))

    assert views[0] == views[1] == views[2]
    assert [note.split(" is unreachable")[0] for note in views[0].stale] == [
        "VMM at contoso-east", "Hyper-V host hv-east-01 at contoso-east", "Hyper-V host hv-east-02 at contoso-east",
        "router rtr-east at contoso-east"]


def test_an_unreachable_site_with_nothing_remembered_fails_with_the_first_sites_error(
        new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    rig.world.inject({"call": "*", "target": "contoso-*", "fault": "transient"})  # both VMM servers
    with pytest.raises(TransientError) as first:
        gather_inventory(rig.config, rig.ports)
    assert "contoso-east" in str(first.value), "the first site's, as a read site after site meets it"


def test_the_plan_state_reads_both_sites_and_their_hosts_at_once(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    vms = rig.config.plan(DEMO_PLAN).vms
    reference = read_vm_states(with_limits(rig.config, 1, 1), rig.ports, vms)
    vmm, hosts = threading.Barrier(2), threading.Barrier(4)
    flights = Flights(gate=lambda kind, args: {"vmm.read_inventory": vmm, "hyperv.get_replications": hosts}.get(kind))
    states = read_vm_states(rig.config, watched(rig.ports, flights), vms)
    assert states == reference and states.unread == ()
    assert {r.vm for r in states.replications} == set(vms)

    rig.world.inject({"call": "*", "target": "hv-east-02", "fault": "transient"})
    darker = read_vm_states(rig.config, rig.ports, vms)
    assert darker.unread == ("contoso-east",), "a site one of whose hosts cannot be read is left out"
    assert {m.site for m in darker.machines} == {"contoso-west"}


def test_each_read_keeps_the_callers_log_context(new_rig: Callable[..., Rig]) -> None:
    import structlog

    rig = new_rig()
    seen: dict[str, set[Any]] = defaultdict(set)
    lock = threading.Lock()

    def note(kind: str, target: str) -> float:
        with lock:
            seen[kind].add(structlog.contextvars.get_contextvars().get("request"))
        return 0.0

    with structlog.contextvars.bound_contextvars(request="req-1"):
        gather_inventory(rig.config, watched(rig.ports, Flights(delay=note)))
    assert seen and all(values == {"req-1"} for values in seen.values()), seen
