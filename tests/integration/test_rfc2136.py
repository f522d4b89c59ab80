"""The RFC 2136 driver and the verifier against a real BIND 9 on 127.0.0.1.

Every outcome is checked with an independent query (``BindServer.rrset`` / ``serial``: raw
dnspython, not the driver's read path). Foreign changes are made with raw dnspython updates
signed with the server's key, as another administrator or tool would.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
import traceback

import pytest
import structlog

from agent.dns.names import reverse_name
from agent.dns.transport import TcpSession
from agent.dns.verify import Expected, nameservers, verify
from agent.domain.errors import DnsBatchError, DnsPrerequisiteFailed
from agent.domain.model import RecordChange, RecordType
from agent.errors import AgentError, TimeoutError_, UnreachableError
from tests.bind import FORWARD_ZONE, REVERSE4_ZONE, REVERSE6_ZONE, BindServer

pytestmark = pytest.mark.bind

A, AAAA, PTR = RecordType.A, RecordType.AAAA, RecordType.PTR


def change(name: str, rtype: RecordType, expected=(), new=(), ttl: int = 60, zone: str = FORWARD_ZONE) -> RecordChange:
    return RecordChange(zone=zone, name=name, type=rtype, ttl=ttl, expected=tuple(expected), new_values=tuple(new))


class CountingSession:
    """Wraps the real TCP session: counts update messages and can act before one is sent."""

    def __init__(self, inner: TcpSession, before_exchange=None) -> None:
        self.inner = inner
        self.before_exchange = before_exchange
        self.exchanges = 0

    def send(self, message):
        self.exchanges += 1
        if self.before_exchange is not None:
            self.before_exchange(self.exchanges)
        self.inner.send(message)

    def receive(self, message):
        return self.inner.receive(message)

    def query_many(self, questions, *, recursion=False):
        return self.inner.query_many(questions, recursion=recursion)

    def close(self):
        self.inner.close()


def counting(bind: BindServer, before_exchange=None, timeout: float = 3.0):
    sessions: list[CountingSession] = []

    def factory():
        s = CountingSession(TcpSession(bind.host, bind.port, timeout), before_exchange)
        sessions.append(s)
        return s

    factory.sessions = sessions  # type: ignore[attr-defined]
    factory.exchanges = lambda: sum(s.exchanges for s in sessions)  # type: ignore[attr-defined]
    return factory


# ----------------------------------------------------------------------- A / AAAA / PTR


def test_replace_a_record(bind, make_driver):
    dns_ = make_driver()
    dns_.apply(FORWARD_ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.10"], ttl=60)])

    assert bind.rrset("host1.example.test.", "A") == (60, ("198.51.100.10",))
    assert bind.serial(FORWARD_ZONE) == 2


def test_add_a_and_aaaa_and_delete_aaaa(bind, make_driver):
    dns_ = make_driver()
    dns_.apply(
        FORWARD_ZONE,
        [
            change("web.example.test.", A, [], ["198.51.100.20", "198.51.100.21"], ttl=120),
            change("web.example.test.", AAAA, [], ["2001:DB8:0:0::20"], ttl=120),
            change("v6host.example.test.", AAAA, ["2001:db8::1"], []),
        ],
    )

    assert bind.rrset("web.example.test.", "A") == (120, ("198.51.100.20", "198.51.100.21"))
    assert bind.rrset("web.example.test.", "AAAA") == (120, ("2001:db8::20",))
    assert bind.rrset("v6host.example.test.", "AAAA") is None
    assert bind.serial(FORWARD_ZONE) == 2  # one message for the three changes


def test_ptr_records_in_ipv4_and_ipv6_reverse_zones_found_by_soa(bind, make_driver):
    dns_ = make_driver()
    v4, v6 = reverse_name("192.0.2.10"), reverse_name("2001:db8::10")
    assert v4 == "10.2.0.192.in-addr.arpa."
    assert v6 == "0.1.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.ip6.arpa."  # 32 nibbles
    z4, z6 = dns_.find_zone(v4), dns_.find_zone(v6)
    assert (z4, z6) == (REVERSE4_ZONE, REVERSE6_ZONE)
    assert dns_.find_zone("example.test") == FORWARD_ZONE  # an apex is its own zone

    dns_.apply(z4, [change(v4, PTR, [], ["Web.Example.Test"], zone=z4)])
    dns_.apply(z6, [change(v6, PTR, [], ["web.example.test."], zone=z6)])
    assert bind.rrset(v4, "PTR") == (60, ("web.example.test.",))
    assert bind.rrset(v6, "PTR") == (60, ("web.example.test.",))

    old = reverse_name("192.0.2.1")
    dns_.apply(z4, [change(old, PTR, ["host1.example.test."], ["moved.example.test."], zone=z4)])
    assert bind.rrset(old, "PTR") == (60, ("moved.example.test.",))

    dns_.apply(z6, [change(v6, PTR, ["web.example.test."], [], zone=z6)])
    assert bind.rrset(v6, "PTR") is None


def test_find_zone_outside_the_served_zones_is_refused(make_driver):
    with pytest.raises(AgentError) as info:
        make_driver().find_zone(reverse_name("203.0.113.5"))
    assert info.value.code == "dns_refused"  # BIND with recursion off refuses foreign names


def test_read_returns_canonical_record_sets(bind, make_driver):
    sets = make_driver().read(
        FORWARD_ZONE,
        [
            ("MULTI.Example.Test", A),
            ("v6host.example.test.", AAAA),
            ("missing.example.test.", A),
            ("host1.example.test.", AAAA),  # the name exists, this type does not
            ("multi.example.test.", A),  # same RRset again: returned once
        ],
    )
    assert [(s.name, s.type, s.ttl, s.values) for s in sets] == [
        ("multi.example.test.", A, 300, ("192.0.2.2", "192.0.2.3")),
        ("v6host.example.test.", AAAA, 300, ("2001:db8::1",)),
    ]


# ------------------------------------------------------------------------ idempotency


def test_check_apply_apply_again_changes_nothing_the_second_time(bind, make_driver):
    sessions = counting(bind)
    dns_ = make_driver(session_factory=sessions)
    before = dns_.read(FORWARD_ZONE, [("host1.example.test.", A)])
    assert before[0].values == ("192.0.2.1",)
    wanted = [
        change("host1.example.test.", A, before[0].values, ["198.51.100.1"]),
        change("fresh.example.test.", A, [], ["198.51.100.2"]),
    ]

    dns_.apply(FORWARD_ZONE, wanted)
    serial = bind.serial(FORWARD_ZONE)
    dns_.apply(FORWARD_ZONE, wanted)  # same call again, e.g. a retry after a lost reply

    assert bind.serial(FORWARD_ZONE) == serial == 2
    assert bind.rrset("host1.example.test.", "A") == (60, ("198.51.100.1",))
    assert bind.rrset("fresh.example.test.", "A") == (60, ("198.51.100.2",))
    # The retry's optimistic message was refused (its pins are stale), nothing was resent.
    assert sessions.exchanges() == 2


def test_ttl_only_change_is_read_first_and_skipped_when_it_holds(bind, make_driver):
    sessions = counting(bind)
    dns_ = make_driver(session_factory=sessions)
    same = change("multi.example.test.", A, ["192.0.2.3", "192.0.2.2"], ["192.0.2.2", "192.0.2.3"], ttl=30)

    dns_.apply(FORWARD_ZONE, [same])
    assert bind.rrset("multi.example.test.", "A") == (30, ("192.0.2.2", "192.0.2.3"))
    dns_.apply(FORWARD_ZONE, [same])

    assert sessions.exchanges() == 1
    assert bind.serial(FORWARD_ZONE) == 2


def test_values_compare_canonically(bind, make_driver):
    dns_ = make_driver()
    dns_.apply(FORWARD_ZONE, [change("v6host.example.test.", AAAA, ["2001:0DB8:0000::0001"], ["2001:db8::99"])])
    assert bind.rrset("v6host.example.test.", "AAAA") == (60, ("2001:db8::99",))


# ------------------------------------------------------------------ pins and conflicts


def test_extra_value_fails_the_pin(bind, make_driver):
    """The zone holds [.2, .3]; a change pinned to [.2] alone must not replace it: BIND compares
    value-dependent prerequisites as whole RRsets (RFC 2136 2.4.2)."""
    with pytest.raises(DnsPrerequisiteFailed) as info:
        make_driver().apply(FORWARD_ZONE, [change("multi.example.test.", A, ["192.0.2.2"], ["198.51.100.7"])])

    err = info.value
    assert err.fields["rcode"] == "NXRRSET"  # refused by the server, not by a local check
    assert err.fields["conflicts"] == [
        {
            "record": "multi.example.test. A",
            "expected": ["192.0.2.2"],
            "found": ["192.0.2.2", "192.0.2.3"],
            "found_ttl": 300,
        }
    ]
    assert bind.rrset("multi.example.test.", "A") == (300, ("192.0.2.2", "192.0.2.3"))
    assert bind.serial(FORWARD_ZONE) == 1


def test_foreign_change_between_read_and_apply_is_reported_not_overwritten(bind, make_driver):
    dns_ = make_driver()
    [seen] = dns_.read(FORWARD_ZONE, [("host1.example.test.", A)])

    foreign = bind.foreign_update(FORWARD_ZONE)
    foreign.replace("host1", 300, "A", "203.0.113.66")
    assert bind.send_update(foreign).rcode() == 0

    with pytest.raises(DnsPrerequisiteFailed) as info:
        dns_.apply(
            FORWARD_ZONE,
            [
                change("host1.example.test.", A, seen.values, ["198.51.100.1"]),
                change("other.example.test.", A, [], ["198.51.100.2"]),  # fine alone, but same message
            ],
        )

    err = info.value
    assert err.code == "dns_prerequisite_failed" and err.category == "permanent"
    assert err.fields["zone"] == FORWARD_ZONE and err.fields["key"] == "agent-key"
    assert [c["record"] for c in err.fields["conflicts"]] == ["host1.example.test. A"]
    assert err.fields["conflicts"][0]["found"] == ["203.0.113.66"]
    assert "host1.example.test. A" in str(err)
    assert bind.rrset("host1.example.test.", "A") == (300, ("203.0.113.66",))
    assert bind.rrset("other.example.test.", "A") is None  # the message is atomic


def test_foreign_create_of_an_expected_absent_rrset_is_reported(bind, make_driver):
    foreign = bind.foreign_update(FORWARD_ZONE)
    foreign.add("newcomer", 300, "A", "203.0.113.9")
    bind.send_update(foreign)

    with pytest.raises(DnsPrerequisiteFailed) as info:
        make_driver().apply(FORWARD_ZONE, [change("newcomer.example.test.", A, [], ["198.51.100.9"])])
    assert info.value.fields["rcode"] == "YXRRSET"
    assert bind.rrset("newcomer.example.test.", "A") == (300, ("203.0.113.9",))


def test_foreign_change_just_before_the_update_is_sent_is_caught_by_the_server(bind, make_driver):
    def meddle(n):
        if n == 1:
            u = bind.foreign_update(FORWARD_ZONE)
            u.add("host1", 300, "A", "203.0.113.1")  # an extra value next to the expected one
            bind.send_update(u)

    with pytest.raises(DnsPrerequisiteFailed) as info:
        make_driver(session_factory=counting(bind, meddle)).apply(
            FORWARD_ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.1"])]
        )
    assert info.value.fields["conflicts"][0]["found"] == ["192.0.2.1", "203.0.113.1"]
    assert bind.rrset("host1.example.test.", "A") == (300, ("192.0.2.1", "203.0.113.1"))


# ------------------------------------------------------------------------ keys and zones


def test_wrong_secret_is_refused_and_nothing_changes(bind, make_driver):
    wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw=="
    with pytest.raises(AgentError) as info:
        make_driver(secret=wrong).apply(
            FORWARD_ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.1"])]
        )
    err = info.value
    assert (err.code, err.category) == ("dns_bad_key", "permanent")
    assert err.fields["key"] == "agent-key"
    assert wrong not in str(err) and wrong not in json.dumps(err.to_dict())
    assert bind.rrset("host1.example.test.", "A") == (300, ("192.0.2.1",))
    assert bind.serial(FORWARD_ZONE) == 1


def test_unknown_key_is_refused_and_nothing_changes(bind, make_driver):
    with pytest.raises(AgentError) as info:
        make_driver(key="no-such-key").apply(FORWARD_ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    assert info.value.code == "dns_bad_key"
    assert info.value.fields["key"] == "no-such-key"
    assert bind.rrset("x.example.test.", "A") is None
    assert bind.serial(FORWARD_ZONE) == 1


def test_key_without_update_rights_is_refused(bind, make_driver):
    with pytest.raises(AgentError) as info:
        make_driver(key="other-key").apply(FORWARD_ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    assert (info.value.code, info.value.fields["rcode"]) == ("dns_refused", "REFUSED")
    assert bind.rrset("x.example.test.", "A") is None


def test_zone_the_server_does_not_serve(make_driver):
    with pytest.raises(AgentError) as info:
        make_driver().apply("other.test.", [change("x.other.test.", A, [], ["198.51.100.1"], zone="other.test.")])
    assert info.value.code == "dns_not_authoritative"


def test_hmac_sha512_key(bind, make_driver):
    make_driver(key="agent-key-512").apply(FORWARD_ZONE, [change("h512.example.test.", A, [], ["198.51.100.51"])])
    assert bind.rrset("h512.example.test.", "A") == (60, ("198.51.100.51",))


# ---------------------------------------------------------------------------- batches


def test_every_failed_batch_is_reported_and_good_batches_stay_applied(bind, make_driver):
    for name, value in (("c1", "203.0.113.1"), ("c3", "203.0.113.3")):
        u = bind.foreign_update(FORWARD_ZONE)
        u.add(name, 300, "A", value)
        bind.send_update(u)
    changes = [
        change("c1.example.test.", A, [], ["198.51.100.1"]),  # batch 1: conflict
        change("ok1.example.test.", A, [], ["198.51.100.11"]),  # batch 1
        change("ok2.example.test.", A, [], ["198.51.100.12"]),  # batch 2
        change("ok3.example.test.", A, [], ["198.51.100.13"]),  # batch 2
        change("c3.example.test.", A, [], ["198.51.100.3"]),  # batch 3: conflict
        change("ok4.example.test.", A, [], ["198.51.100.14"]),  # batch 3
    ]

    with pytest.raises(DnsBatchError) as info:
        make_driver(batch_size=2).apply(FORWARD_ZONE, changes)

    err = info.value
    assert err.code == "dns_batch_failed" and err.category == "permanent"
    assert err.fields["batches"] == 3 and err.fields["applied_batches"] == 1
    assert [(f.code, f.fields["batch"], f.fields["records"]) for f in err.failures] == [
        ("dns_prerequisite_failed", 1, ["c1.example.test. A", "ok1.example.test. A"]),
        ("dns_prerequisite_failed", 3, ["c3.example.test. A", "ok4.example.test. A"]),
    ]
    assert [c["record"] for f in err.failures for c in f.fields["conflicts"]] == [
        "c1.example.test. A",
        "c3.example.test. A",
    ]
    assert bind.rrset("ok2.example.test.", "A") == (60, ("198.51.100.12",))
    assert bind.rrset("ok3.example.test.", "A") == (60, ("198.51.100.13",))
    for name in ("ok1", "ok4"):
        assert bind.rrset(f"{name}.example.test.", "A") is None
    assert json.loads(json.dumps(err.to_dict()))["failures"][1]["batch"] == 3
    assert [f.code for f in pickle.loads(pickle.dumps(err)).failures] == ["dns_prerequisite_failed"] * 2


# ------------------------------------------------------------------- server failures


def test_named_stopped_mid_operation_is_transient_and_a_retry_after_restart_succeeds(bind, make_driver):
    def stop_before_second(n):
        if n == 2:
            bind.stop()

    changes = [change(f"r{i}.example.test.", A, [], [f"198.51.100.{i}"]) for i in range(1, 4)]
    with pytest.raises(DnsBatchError) as info:
        make_driver(batch_size=1, session_factory=counting(bind, stop_before_second)).apply(FORWARD_ZONE, changes)

    err = info.value
    assert err.category == "transient" and err.transient
    assert [(f.code, f.fields["batch"], f.fields.get("attempted", True)) for f in err.failures] == [
        ("unreachable", 2, True),
        ("unreachable", 3, False),
    ]
    assert all(isinstance(f, UnreachableError) for f in err.failures)

    bind.start()  # same port, same directory: the journal brings batch 1 back
    assert bind.rrset("r1.example.test.", "A") == (60, ("198.51.100.1",))
    sessions = counting(bind)
    make_driver(batch_size=1, session_factory=sessions).apply(FORWARD_ZONE, changes)

    for i in range(1, 4):
        assert bind.rrset(f"r{i}.example.test.", "A") == (60, (f"198.51.100.{i}",))
    assert bind.serial(FORWARD_ZONE) == 4  # r1 was not written twice


def test_named_down_is_unreachable(bind, make_driver):
    bind.stop()
    dns_ = make_driver()
    with pytest.raises(UnreachableError) as info:
        dns_.apply(FORWARD_ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    assert info.value.transient and info.value.fields["address"] == f"127.0.0.1:{bind.port}"
    with pytest.raises(UnreachableError):
        dns_.read(FORWARD_ZONE, [("host1.example.test.", A)])


def test_named_not_answering_is_a_timeout_then_works_again(bind, make_driver):
    dns_ = make_driver(timeout_s=0.5)
    with bind.paused():
        started = time.monotonic()
        with pytest.raises(TimeoutError_) as info:
            dns_.apply(FORWARD_ZONE, [change("slow.example.test.", A, [], ["198.51.100.1"])])
        assert time.monotonic() - started < 3
    assert info.value.code == "timeout" and info.value.transient

    dns_.apply(FORWARD_ZONE, [change("slow.example.test.", A, [], ["198.51.100.1"])])
    assert bind.rrset("slow.example.test.", "A") == (60, ("198.51.100.1",))


# ------------------------------------------------------------------------------ secrets


def test_the_secret_never_appears_in_logs_reprs_or_errors(bind, make_driver, capsys, caplog):
    good = bind.keys["agent-key"].secret
    wrong = "bm90LXRoZS1yZWFsLXNlY3JldC1idXQtc3RpbGwtc2VjcmV0"
    texts: list[str] = []
    with structlog.testing.capture_logs() as events, caplog.at_level("DEBUG"):
        ok = make_driver()
        texts.append(repr(ok))
        ok.apply(FORWARD_ZONE, [change("s1.example.test.", A, [], ["198.51.100.1"])])
        failures: list[AgentError] = []
        for dns_, call in (
            (
                make_driver(secret=wrong),
                lambda d: d.apply(FORWARD_ZONE, [change("s2.example.test.", A, [], ["198.51.100.2"])]),
            ),
            (ok, lambda d: d.apply(FORWARD_ZONE, [change("s1.example.test.", A, ["198.51.100.9"], ["198.51.100.3"])])),
            (
                make_driver(batch_size=1),
                lambda d: d.apply(
                    FORWARD_ZONE,
                    [
                        change("s1.example.test.", A, [], ["198.51.100.4"]),
                        change("s3.example.test.", A, [], ["198.51.100.5"]),
                    ],
                ),
            ),
        ):
            texts.append(repr(dns_))
            with pytest.raises(AgentError) as info:
                call(dns_)
            failures.append(info.value)
        bind.stop()
        with pytest.raises(AgentError) as info:
            ok.apply(FORWARD_ZONE, [change("s4.example.test.", A, [], ["198.51.100.6"])])
        failures.append(info.value)
    assert [f.code for f in failures] == ["dns_bad_key", "dns_prerequisite_failed", "dns_batch_failed", "unreachable"]
    for err in failures:
        texts += [str(err), repr(err), json.dumps(err.to_dict()), "".join(traceback.format_exception(err))]
    texts += [repr(e) for e in events]
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    blob = "\n".join(texts)
    assert events, "the driver logged nothing: this test would prove nothing"
    for secret in (good, wrong):
        assert secret not in blob


# ------------------------------------------------------------------------------ verify


def test_verify_reports_a_lagging_secondary(bind, bind_secondary, make_driver):
    changes = [
        change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.1"]),
        change("added.example.test.", A, [], ["198.51.100.2"]),
    ]
    make_driver().apply(FORWARD_ZONE, changes)

    report = verify(
        FORWARD_ZONE, changes, servers=[bind.address, bind_secondary.address], timeout_s=0.6, interval_s=0.1
    )

    assert not report.ok
    primary, secondary = report.servers
    assert primary.converged and primary.waited_s < 0.5 and primary.rounds == 1
    assert not secondary.converged and secondary.waited_s >= 0.6 and secondary.rounds >= 3
    assert [lag.server.port for lag in report.lagging] == [bind_secondary.port]
    assert [(a.name, a.values, a.ttl) for a in secondary.stale] == [
        ("host1.example.test.", ("192.0.2.1",), 300),
        ("added.example.test.", (), 60),  # NXDOMAIN, negative TTL from the SOA
    ]
    text = report.summary()
    assert f"LAG  127.0.0.1:{bind_secondary.port}" in text and "192.0.2.1" in text


def test_verify_waits_for_a_secondary_that_catches_up(bind, bind_secondary, make_driver):
    changes = [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.1"])]
    make_driver().apply(FORWARD_ZONE, changes)

    def catch_up():
        time.sleep(0.4)
        u = bind_secondary.foreign_update(FORWARD_ZONE)
        u.replace("host1", 60, "A", "198.51.100.1")
        bind_secondary.send_update(u)

    t = threading.Thread(target=catch_up)
    t.start()
    report = verify(
        FORWARD_ZONE, changes, servers=[bind.address, bind_secondary.address], timeout_s=10, interval_s=0.05
    )
    t.join()

    assert report.ok, report.summary()
    assert 0.35 < report.servers[1].waited_s < 5
    assert report.servers[1].rounds > 1


def test_verify_finds_the_servers_from_the_ns_set(bind, make_driver):
    found, unresolved = nameservers(FORWARD_ZONE, via=bind.address, port=bind.port)
    assert [(s.host, s.port, s.name) for s in found] == [("127.0.0.1", bind.port, "ns1.example.test.")]
    assert unresolved == []

    changes = [change("v6host.example.test.", AAAA, ["2001:db8::1"], [])]  # a delete
    make_driver().apply(FORWARD_ZONE, changes)
    report = verify(FORWARD_ZONE, changes, via=bind.address, ns_port=bind.port, timeout_s=2)
    assert report.ok and report.servers[0].server.name == "ns1.example.test."


def test_verify_reports_what_a_resolver_still_caches(bind, bind_resolver, make_driver):
    r = bind_resolver.query("host1.example.test.", "A", recursion=True)
    assert r.answer[0][0].address == "192.0.2.1"
    changes = [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.1"])]
    make_driver().apply(FORWARD_ZONE, changes)

    report = verify(
        FORWARD_ZONE,
        [Expected("host1.example.test.", A, ("198.51.100.1",), 60)],
        servers=[bind.address],
        resolvers=[bind_resolver.address],
        timeout_s=2,
    )

    assert report.ok  # the authoritative side is done ...
    [resolver] = report.resolvers
    [cached] = resolver.answers
    assert not cached.current and cached.answer.values == ("192.0.2.1",)  # ... clients still get the old address
    assert 0 < cached.ttl_remaining <= 300 and resolver.stale_for_s == cached.ttl_remaining
    assert "caches host1.example.test. A -> [192.0.2.1]" in report.summary()
