"""The verifier's waiting and reporting, offline: scripted servers and a fake clock."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from agent.dns.verify import Answer, Expected, Nameserver, host_port, verify, verify_update
from agent.domain.model import RecordChange, RecordSet, RecordType

ZONE = "example.test."
A = RecordType.A


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Scripted:
    """Per server (port), a list of zone states, one per round (the last one repeats). A state
    maps name -> (ttl, values); an exception in the list is raised for that round."""

    def __init__(self, clock: Clock, script: dict[int, list], *, authoritative: bool = True) -> None:
        self.clock, self.script, self.authoritative = clock, script, authoritative
        self.rounds: dict[int, int] = {}
        self.recursion: list[bool] = []

    def __call__(self, host: str, port: int, timeout: float):
        outer = self

        class Session:
            def query_many(self, questions, *, recursion=False):
                outer.recursion.append(recursion)
                n = outer.rounds.get(port, 0)
                outer.rounds[port] = n + 1
                states = outer.script[port]
                state = states[min(n, len(states) - 1)]
                outer.clock.now += 0.01  # a query takes a little time
                if isinstance(state, BaseException):
                    raise state
                replies = []
                for name, rdtype in questions:
                    r = dns.message.make_response(dns.message.make_query(name, rdtype))
                    if outer.authoritative:
                        r.flags |= dns.flags.AA
                    found = state.get(name.to_text())
                    if found:
                        r.answer.append(dns.rrset.from_text_list(name, found[0], "IN", rdtype, found[1]))
                    else:
                        r.set_rcode(dns.rcode.NXDOMAIN)
                        r.authority.append(dns.rrset.from_text(ZONE, 300, "IN", "SOA", "ns1. h. 1 2 3 4 60"))
                    replies.append(dns.message.from_wire(r.to_wire()))
                return replies

            def close(self):
                pass

        return Session()


OLD = {"web.example.test.": (300, ["192.0.2.1"])}
NEW = {"web.example.test.": (60, ["198.51.100.1"])}
CHANGE = RecordChange(
    zone=ZONE, name="web.example.test.", type=A, ttl=60, expected=("192.0.2.1",), new_values=("198.51.100.1",)
)


def run(script, clock=None, **kw):
    clock = clock or Clock()
    factory = Scripted(clock, script, authoritative=kw.pop("authoritative", True))
    servers = kw.pop("servers", [("192.0.2.53", port) for port in script])
    report = verify(
        ZONE,
        kw.pop("expected", [CHANGE]),
        servers=servers,
        session_factory=factory,
        clock=clock,
        sleep=clock.sleep,
        **kw,
    )
    return report, factory


def test_every_server_answering_at_once_is_ok_after_one_round():
    report, factory = run({1: [NEW], 2: [NEW]}, timeout_s=5)
    assert report.ok and report.lagging == ()
    assert [s.rounds for s in report.servers] == [1, 1]
    assert factory.recursion == [False, False]  # authoritative servers are asked non-recursively


def test_a_server_that_catches_up_is_waited_for_and_the_wait_is_reported():
    report, factory = run({1: [NEW], 2: [OLD, OLD, OLD, NEW]}, timeout_s=5, interval_s=0.5)
    assert report.ok
    fast, slow = report.servers
    assert fast.rounds == 1 and fast.waited_s == pytest.approx(0.01)
    assert slow.rounds == 4 and slow.waited_s == pytest.approx(1.5 + 0.05, abs=0.02)
    assert factory.rounds == {1: 1, 2: 4}  # a converged server is not asked again


def test_a_server_that_never_catches_up_is_named_with_what_it_still_answers():
    report, _ = run({1: [NEW], 2: [OLD]}, timeout_s=2, interval_s=0.5)
    assert not report.ok
    [lag] = report.lagging
    assert lag.server == Nameserver("192.0.2.53", 2)
    assert lag.stale == (Answer("web.example.test.", A, ("192.0.2.1",), 300),)
    assert lag.waited_s == pytest.approx(2.0, abs=0.05)
    assert "LAG  192.0.2.53:2: still answers web.example.test. A -> [192.0.2.1] ttl 300" in report.summary()
    assert report.to_dict()["servers"][1]["stale"] == ["web.example.test. A -> [192.0.2.1] ttl 300"]


def test_the_ttl_is_part_of_the_new_data():
    report, _ = run({1: [{"web.example.test.": (300, ["198.51.100.1"])}]}, timeout_s=0.5)
    assert not report.ok  # right address, old TTL: not the update


def test_query_errors_do_not_end_the_wait_and_the_last_one_is_reported():
    report, _ = run({1: [TimeoutError(), ConnectionRefusedError(), NEW]}, timeout_s=5, interval_s=0.1)
    assert report.ok and report.servers[0].rounds == 3

    report, _ = run({1: [ConnectionRefusedError()]}, timeout_s=0.3, interval_s=0.1)
    assert not report.ok and report.servers[0].error.startswith("unreachable: ")
    assert "last error: unreachable" in report.summary()


def test_an_answer_without_authority_does_not_count():
    report, _ = run({1: [NEW]}, timeout_s=0.2, authoritative=False)
    assert not report.ok and report.servers[0].error.startswith("dns_not_authoritative")


def test_a_delete_is_verified_as_absence():
    gone = RecordChange(zone=ZONE, name="web.example.test.", type=A, ttl=60, expected=("192.0.2.1",))
    assert Expected.of(gone) == Expected("web.example.test.", A, (), None)
    report, _ = run({1: [OLD, {}]}, expected=[gone], timeout_s=5)
    assert report.ok and report.servers[0].rounds == 2


def test_expected_values_are_canonical_and_record_sets_work_too():
    rs = RecordSet(zone=ZONE, name="web.example.test.", type=RecordType.AAAA, ttl=60, values=("2001:DB8::1",))
    assert Expected.of(rs) == Expected("web.example.test.", RecordType.AAAA, ("2001:db8::1",), 60)
    assert Expected.of(Expected("Web.Example.Test", A, ("192.0.2.1",))).name == "web.example.test."


def test_resolvers_report_what_they_still_cache():
    clock = Clock()
    factory = Scripted(clock, {1: [NEW], 7: [{"web.example.test.": (240, ["192.0.2.1"])}], 8: [NEW]})
    report = verify(
        ZONE,
        [CHANGE],
        servers=[("192.0.2.53", 1)],
        resolvers=[("192.0.2.99", 7), Nameserver("192.0.2.98", 8)],
        session_factory=factory,
        clock=clock,
        sleep=clock.sleep,
    )
    stale, fresh = report.resolvers
    assert stale.stale_for_s == 240 and not stale.answers[0].current
    assert fresh.stale_for_s == 0 and fresh.answers[0].current
    assert factory.recursion == [False, True, True]
    assert "resolver 192.0.2.99:7: caches web.example.test. A -> [192.0.2.1] ttl 240 for 240 s more" in report.summary()
    assert report.ok  # resolvers inform; they do not fail the verification


def test_verify_needs_somewhere_to_ask():
    with pytest.raises(ValueError, match="servers"):
        verify(ZONE, [CHANGE])


def test_no_servers_is_not_ok():
    report, _ = run({}, servers=[], timeout_s=1)
    assert not report.ok


def test_labels():
    assert Nameserver("2001:db8::53", 53).label == "[2001:db8::53]:53"
    assert Nameserver("192.0.2.53", 5353, "ns1.example.test.").label == "ns1.example.test. (192.0.2.53:5353)"


# ------------------------------------------------------------- what the config names


@pytest.mark.parametrize(("text", "expected"), [
    ("ns2.example.test", ("ns2.example.test", 53)),
    ("192.0.2.53:5353", ("192.0.2.53", 5353)),
    ("[2001:db8::53]:5300", ("2001:db8::53", 5300)),
    ("[2001:db8::53]", ("2001:db8::53", 53)),
    ("2001:db8::53", ("2001:db8::53", 53)),
])
def test_a_server_to_ask_is_a_host_with_an_optional_port(text: str, expected: tuple[str, int]) -> None:
    assert host_port(text, 53) == expected


def test_verification_follows_the_servers_config() -> None:
    from agent.config import DnsServer

    server = DnsServer(name="dns1", kind="rfc2136", address="192.0.2.53", tsig={"name": "k", "secret": "env:K"},
                       verify_timeout_s=0)
    change = RecordChange(zone=ZONE, name=f"host1.{ZONE}", type=A, ttl=60, expected=(), new_values=("192.0.2.1",))
    assert verify_update(server, ZONE, [change]) is None, "verify_timeout_s 0: verification off"
    assert verify_update(server.model_copy(update={"verify_timeout_s": 5}), ZONE, []) is None, "nothing changed"
