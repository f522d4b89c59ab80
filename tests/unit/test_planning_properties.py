"""build_plan on random small worlds (hypothesis): whatever the addresses, grants and pool
sizes, a plan never doubles an address, respects reserved and foreign addresses, keeps free
source addresses, reuses its own grants the second time, and does not depend on the order of
the inventory. Plus the garbage collector is left as it was found."""

from __future__ import annotations

import contextlib
import gc

from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_planning_world import A, B, World, config, mapping, plan, whole_subnet

from agent.domain.plan import ReserveIp, SetFailoverIp
from agent.domain.planning import build_plan
from agent.domain.validation import PlanRefused


@st.composite
def small_worlds(draw):
    strategy = draw(st.sampled_from(["retain", "change"]))
    start = draw(st.integers(2, 60))
    end = draw(st.integers(start, start + 25))
    dst_net = "10.0.0" if strategy == "retain" else "172.16.0"
    reserved = draw(st.sets(st.integers(start, end), max_size=4))
    n_vms = draw(st.integers(1, 8))
    sources = draw(st.lists(st.integers(2, 90), min_size=n_vms, max_size=3 * n_vms, unique=True))
    foreign = draw(st.sets(st.integers(start, end), max_size=6) .map(lambda s: s - reserved))
    w = World()
    w.network(A, "n", {"s": "10.0.0.0/24"}).network(B, "n-dr", {"s": f"{dst_net}.0/24"})
    w.pool(B, "n-dr", "s", f"{dst_net}.0/24", f"{dst_net}.{start}", f"{dst_net}.{end}", name="pool",
           reserved=tuple(f"{dst_net}.{o}" for o in sorted(reserved)))
    for o in sorted(foreign):
        w.grant(B, "pool", f"{dst_net}.{o}", "someone-else")
    names = []
    it = iter(sources)
    for i in range(n_vms):
        per_nic = [[next(it)]]
        for extra in sources[n_vms + 2 * i: n_vms + 2 * i + 2]:
            if draw(st.booleans()):
                per_nic[0].append(extra)  # secondary IP configurations
        w.vm(f"vm{i}", {"nic0": ("n", "s", [f"10.0.0.{o}/24" for o in per_nic[0]])})
        names.append(f"vm{i}")
    groups = draw(st.integers(1, 3))
    cfg = config(mappings=[mapping("n", "n-dr", strategy)], subnets=[whole_subnet("10.0.0.0/24")],
                 plans=[plan("p", *[names[g::groups] for g in range(groups) if names[g::groups]])])
    return w, cfg, strategy, dst_net, (start, end), reserved, foreign


@settings(max_examples=100, deadline=None)
@given(small_worlds(), st.randoms(use_true_random=False))
def test_random_worlds_plan_safely_and_idempotently(world, rnd) -> None:
    w, cfg, strategy, dst_net, (start, end), reserved, foreign = world
    inv = w.inventory()
    configs = [(v.name, c.address) for v in inv.vms if v.role == "primary" for n in v.nics for c in n.ip_configurations]
    free = (end - start + 1) - len(reserved) - len(foreign)
    try:
        first = build_plan(cfg, inv, "p", "planned")
    except PlanRefused as err:
        event("pool exhausted")
        assert err.codes == ["pool_exhausted"] and len(configs) > free
        assert len(err.reasons[0].fields["nics"]) == len(configs) - free
        return
    assert len(configs) <= free
    event(f"planned {strategy}")
    reserves = first.of(ReserveIp)
    assert len(reserves) == len(configs)
    addresses = [r.address for r in reserves]
    assert len(set(addresses)) == len(addresses)
    for r in reserves:
        last = int(r.address.rsplit(".", 1)[1])
        assert r.address.startswith(dst_net + ".") and start <= last <= end
        assert last not in reserved and last not in foreign
        src_last = int(r.source_address.rsplit(".", 1)[1])
        if strategy == "retain" and start <= src_last <= end and src_last not in reserved | foreign:
            assert r.address == r.source_address  # a free source address is always kept
    assert sum(len(c.settings) for c in first.of(SetFailoverIp)) == len(configs)

    shuffled = inv.model_copy(update={"vms": tuple(rnd.sample(inv.vms, len(inv.vms))),
                                      "grants": tuple(rnd.sample(inv.grants, len(inv.grants)))})
    assert build_plan(cfg, shuffled, "p", "planned").checksum() == first.checksum()

    w.apply_grants(reserves)
    second = build_plan(cfg, w.inventory(), "p", "planned")
    assert [(r.vm, r.ip_index, r.address) for r in second.of(ReserveIp)] == [
        (r.vm, r.ip_index, r.address) for r in reserves
    ]
    assert all(r.existing for r in second.of(ReserveIp))


def test_the_garbage_collector_is_left_as_it_was() -> None:
    from test_planning_world import standard_config, standard_world

    assert gc.isenabled()
    build_plan(standard_config(), standard_world().inventory(), "web", "planned")
    assert gc.isenabled()
    with contextlib.suppress(PlanRefused):
        build_plan(standard_config(), standard_world().inventory(), "nope", "planned")
    assert gc.isenabled()
    gc.disable()
    try:
        build_plan(standard_config(), standard_world().inventory(), "web", "planned")
        assert not gc.isenabled()
    finally:
        gc.enable()
