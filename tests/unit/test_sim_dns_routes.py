"""The simulated DNS servers and routers."""

from __future__ import annotations

import pytest

from agent.domain.errors import DnsNotAuthoritative, DnsPrerequisiteFailed, DnsRefused, InvalidRequest
from agent.domain.model import RecordChange, RecordSet, RecordType, Route
from agent.drivers.sim import SimWorld
from agent.errors import NotFoundError
from agent.ports import Dns, DnsVerification, Routes

ZONE = "example.com."
A = RecordType.A


@pytest.fixture
def dns(world: SimWorld) -> Dns:
    return world.dns("dns-main")


@pytest.fixture
def routes(world: SimWorld) -> Routes:
    return world.routes()


def change(name: str, expected: tuple[str, ...], new: tuple[str, ...], ttl: int = 60, rtype=A) -> RecordChange:
    return RecordChange(zone=ZONE, name=name, type=rtype, ttl=ttl, expected=expected, new_values=new)


# ----------------------------------------------------------------------------------- DNS


def test_is_a_dns_port(dns: Dns) -> None:
    assert isinstance(dns, Dns)
    assert dns.name == "dns-main"


def test_read_returns_existing_record_sets_only(dns: Dns) -> None:
    found = dns.read(ZONE, [("WEB02.example.com.", A), ("nothing.example.com.", A)])
    assert found == [
        RecordSet(zone=ZONE, name="web02.example.com.", type=A, ttl=300, values=("192.168.1.11", "192.168.1.12"))
    ]


def test_apply_then_apply_again_changes_nothing(world: SimWorld, dns: Dns) -> None:
    changes = [
        change("web01.example.com.", ("192.168.1.10",), ("172.16.1.10",)),
        change("new.example.com.", (), ("172.16.1.11",)),
        change("app01.example.com.", ("192.168.2.10",), ()),
    ]
    dns.apply(ZONE, changes)
    assert dns.read(ZONE, [("web01.example.com.", A), ("new.example.com.", A), ("app01.example.com.", A)]) == [
        RecordSet(zone=ZONE, name="web01.example.com.", type=A, ttl=60, values=("172.16.1.10",)),
        RecordSet(zone=ZONE, name="new.example.com.", type=A, ttl=60, values=("172.16.1.11",)),
    ]
    before = world.snapshot()
    dns.apply(ZONE, changes)  # expected values no longer hold, but the new ones do: nothing to do
    assert world.snapshot() == before
    first, second = world.calls("dns.apply")
    assert first.seq is not None and first.changed
    assert second.seq is None and second.changed == ()


def test_a_stale_expectation_refuses_the_whole_batch(world: SimWorld, dns: Dns) -> None:
    before = world.snapshot()
    with pytest.raises(DnsPrerequisiteFailed) as info:
        dns.apply(
            ZONE,
            [
                change("web01.example.com.", ("192.168.1.10",), ("172.16.1.10",)),
                change("web02.example.com.", ("192.168.1.11",), ("172.16.1.20",)),  # it also holds .12
            ],
        )
    assert info.value.fields["record"] == "web02.example.com. A"
    assert info.value.fields["found"] == ["192.168.1.11", "192.168.1.12"]
    assert "192.168.1.12" in info.value.message
    assert world.snapshot() == before  # web01 was not changed either


def test_expecting_absence_of_an_existing_record_fails(dns: Dns) -> None:
    with pytest.raises(DnsPrerequisiteFailed, match="web01"):
        dns.apply(ZONE, [change("web01.example.com.", (), ("172.16.1.10",))])


def test_ttl_only_change_is_a_change(dns: Dns) -> None:
    dns.apply(ZONE, [change("web01.example.com.", ("192.168.1.10",), ("192.168.1.10",), ttl=30)])
    assert dns.read(ZONE, [("web01.example.com.", A)])[0].ttl == 30


def test_ptr_and_aaaa_values_are_canonical(dns: Dns) -> None:
    dns.apply(
        "2.168.192.in-addr.arpa",
        [
            RecordChange(
                zone="2.168.192.in-addr.arpa.",
                name="10.2.168.192.in-addr.arpa.",
                type=RecordType.PTR,
                ttl=60,
                expected=("APP01.example.com.",),
                new_values=("app01-dr.example.com.",),
            )
        ],
    )
    dns.apply(
        ZONE, [change("v6web01.example.com.", ("2001:0db8:0001::0010",), ("2001:db8:2::10",), rtype=RecordType.AAAA)]
    )
    [aaaa] = dns.read(ZONE, [("v6web01.example.com.", RecordType.AAAA)])
    assert aaaa.values == ("2001:db8:2::10",)


def test_an_ipv4_mapped_aaaa_value_keeps_the_address_text_of_the_domain(world: SimWorld, dns: Dns) -> None:
    # dnspython would write ::ffff:192.0.2.1; VMM addresses and existing state files hold this form.
    dns.apply(ZONE, [change("mapped.example.com.", (), ("::FFFF:192.0.2.1",), rtype=RecordType.AAAA)])
    [aaaa] = dns.read(ZONE, [("mapped.example.com.", RecordType.AAAA)])
    assert aaaa.values == ("::ffff:c000:201",)
    before = world.snapshot()
    dns.apply(ZONE, [change("mapped.example.com.", ("::ffff:c000:201",), ("::ffff:192.0.2.1",), rtype=RecordType.AAAA)])
    assert world.snapshot() == before  # both spellings are the value already there


PTR = RecordType.PTR


@pytest.mark.parametrize(
    ("zone", "changes", "error"),
    [
        ("example.org.", [], DnsNotAuthoritative),
        (ZONE, [change("web01.example.org.", (), ("10.0.0.1",))], DnsNotAuthoritative),
        (ZONE, [change("web01", (), ("10.0.0.1",))], DnsNotAuthoritative),  # not fully qualified
        (ZONE, [change("x.example.com.", (), ("not-an-ip",))], DnsRefused),
        (ZONE, [change("x.example.com.", (), ("2001:db8::1",))], DnsRefused),  # AAAA value in an A set
        (ZONE, [change("x.example.com.", (), ("192.168.01.1",))], DnsRefused),  # leading zero
        (ZONE, [change("x.example.com.", (), ("fe80::1%eth0",), rtype=RecordType.AAAA)], DnsRefused),  # zone id
        (ZONE, [change("x.example.com.", (), ("app01.example.com",), rtype=PTR)], DnsRefused),  # relative target
        (ZONE, [change("x.example.com.", (), (".",), rtype=PTR)], DnsRefused),  # the root
        (ZONE, [change("x.example.com.", (), ("app01..example.com.",), rtype=PTR)], DnsRefused),  # empty label
        (ZONE, [change("x.example.com.", ("app01.example.com",), ("app01.example.com.",), rtype=PTR)], DnsRefused),
        (ZONE, [change("x.example.com.", (), ("10.0.0.1",)), change("X.example.com.", (), ("10.0.0.2",))], DnsRefused),
    ],
)
def test_dns_refusals(dns: Dns, zone: str, changes: list[RecordChange], error: type) -> None:
    with pytest.raises(error):
        dns.apply(zone, changes)


def test_a_refused_value_names_its_record_and_applies_nothing(world: SimWorld, dns: Dns) -> None:
    before = world.snapshot()
    with pytest.raises(DnsRefused) as info:
        dns.apply(
            ZONE,
            [
                change("web01.example.com.", ("192.168.1.10",), ("172.16.1.10",)),
                change("x.example.com.", (), ("app01.example.com",), rtype=PTR),
            ],
        )
    assert info.value.fields["record"] == "x.example.com. PTR"
    assert "fully qualified" in info.value.message
    assert world.snapshot() == before


# ------------------------------------------------------------------------- DNS verify


MOVE = [
    change("web01.example.com.", ("192.168.1.10",), ("172.16.1.10",)),
    change("new.example.com.", (), ("172.16.1.11",)),
    change("app01.example.com.", ("192.168.2.10",), ()),
]


def test_verify_after_an_apply_reports_every_record_answered(dns: Dns) -> None:
    dns.apply(ZONE, MOVE)
    found = dns.verify(ZONE, MOVE)
    assert isinstance(found, DnsVerification)
    assert found.ok
    assert "answers the new data" in found.summary()
    assert found.to_dict() == {
        "zone": ZONE,
        "ok": True,
        "servers": [{"server": "dns-main", "converged": True, "stale": []}],
    }


def test_verify_names_each_record_changed_behind_its_back(dns: Dns) -> None:
    dns.apply(ZONE, MOVE)
    # Someone else moves web01 on, puts app01 back and removes new, after the agent's update.
    dns.apply(
        ZONE,
        [
            change("web01.example.com.", ("172.16.1.10",), ("172.16.1.99",)),
            change("app01.example.com.", (), ("192.168.2.10",)),
            change("new.example.com.", ("172.16.1.11",), ()),
        ],
    )
    found = dns.verify(ZONE, MOVE)
    assert found is not None and not found.ok
    stale = [
        "web01.example.com. A -> [172.16.1.99]",
        "new.example.com. A -> nothing",
        "app01.example.com. A -> [192.168.2.10]",
    ]
    assert list(found.stale) == stale
    assert all(s in found.summary() for s in stale)
    assert found.to_dict()["ok"] is False
    assert found.to_dict()["servers"] == [{"server": "dns-main", "converged": False, "stale": stale}]


def test_verify_counts_a_different_ttl_as_stale(dns: Dns) -> None:
    dns.apply(ZONE, MOVE)
    dns.apply(ZONE, [change("web01.example.com.", ("172.16.1.10",), ("172.16.1.10",), ttl=3600)])
    found = dns.verify(ZONE, MOVE)
    assert found is not None and found.stale == ("web01.example.com. A -> [172.16.1.10]",)


def test_verify_compares_canonical_values(dns: Dns) -> None:
    v6 = [change("v6web01.example.com.", ("2001:db8:1::10",), ("2001:DB8:2:0::10",), rtype=RecordType.AAAA)]
    dns.apply(ZONE, v6)
    found = dns.verify(ZONE, v6)
    assert found is not None and found.ok


def test_verify_of_no_changes_is_none_and_asks_nothing(world: SimWorld, dns: Dns) -> None:
    assert dns.verify(ZONE, []) is None
    assert world.calls("dns.verify") == []


def test_verify_is_a_read_recorded_in_the_call_log(world: SimWorld, dns: Dns) -> None:
    dns.apply(ZONE, MOVE)
    before = world.snapshot()
    dns.verify(ZONE, MOVE)
    assert world.snapshot() == before
    [call] = world.calls("dns.verify")
    assert call.kind == "dns.verify" and call.target == "dns-main"
    assert call.items == ("web01.example.com. A", "new.example.com. A", "app01.example.com. A")
    assert call.changed == () and call.seq is None and call.error is None


def test_each_server_has_its_own_zones(world: SimWorld) -> None:
    test_dns = world.dns("dns-test")
    test_dns.apply(ZONE, [change("web01.example.com.", (), ("192.168.1.10",))])
    assert world.dns("dns-main").read(ZONE, [("web01.example.com.", A)])[0].ttl == 300
    with pytest.raises(DnsNotAuthoritative):
        test_dns.read("2.168.192.in-addr.arpa.", [])
    with pytest.raises(NotFoundError):
        world.dns("dns-nowhere")


# -------------------------------------------------------------------------------- routes


def route(router: str, prefix: str = "192.168.1.0/24", **kw) -> Route:
    return Route(router=router, prefix=prefix, **kw)


def test_is_a_routes_port(routes: Routes) -> None:
    assert isinstance(routes, Routes)


def test_move_a_subnet_between_sites(routes: Routes) -> None:
    [withdrawn] = routes.withdraw([route("rtr-a", interface="vlan10")])
    [announced] = routes.announce([route("rtr-b", interface="vlan110", metric=10)])
    assert withdrawn.changed and announced.changed
    assert announced.key == "rtr-b:192.168.1.0/24"
    assert routes.read_routes("rtr-a") == []
    assert routes.read_routes("rtr-b", ["192.168.1.0/24"]) == [route("rtr-b", interface="vlan110", metric=10)]
    assert not routes.withdraw([route("rtr-a", interface="vlan10")])[0].changed
    assert not routes.announce([route("rtr-b", interface="vlan110", metric=10)])[0].changed


def test_repointing_a_route_elsewhere_is_a_conflict(world: SimWorld, routes: Routes) -> None:
    before = world.snapshot()
    [announce] = routes.announce([route("rtr-c", next_hop="10.0.0.2", metric=20)])
    [withdraw] = routes.withdraw([route("rtr-c", next_hop="10.0.0.2")])
    assert announce.error.code == withdraw.error.code == "route_conflict"
    assert "10.0.0.1" in announce.error.message
    assert world.snapshot() == before
    # Repointing is withdraw-then-announce of the route the caller knows is there.
    routes.withdraw([route("rtr-c", next_hop="10.0.0.1", metric=20)])
    assert routes.announce([route("rtr-c", next_hop="10.0.0.2", metric=20)])[0].changed


def test_new_metric_on_the_same_next_hop_is_applied(routes: Routes) -> None:
    [result] = routes.announce([route("rtr-c", next_hop="10.0.0.1", metric=5)])
    assert result.changed and routes.read_routes("rtr-c")[0].metric == 5


def test_unknown_router_and_mixed_routers(routes: Routes) -> None:
    [missing] = routes.announce([route("rtr-z", next_hop="10.0.0.1")])
    assert missing.error.code == "not_found" and missing.error.fields["router"] == "rtr-z"
    with pytest.raises(NotFoundError):
        routes.read_routes("rtr-z")
    with pytest.raises(InvalidRequest):
        routes.announce([route("rtr-a", interface="x"), route("rtr-b", interface="y")])


def test_the_call_log_counts_only_records_that_changed(world: SimWorld, dns: Dns) -> None:
    dns.apply(
        ZONE,
        [
            change("web01.example.com.", ("192.168.1.10",), ("192.168.1.10",), ttl=300),  # already so
            change("new.example.com.", (), ("172.16.1.11",)),
        ],
    )
    [call] = world.calls("dns.apply")
    assert call.items == ("web01.example.com. A", "new.example.com. A")
    assert call.changed == ("new.example.com. A",)
