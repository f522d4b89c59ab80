"""The RFC 2136 driver's logic offline: a fake server behind the session seam.

The fake evaluates RFC 2136 prerequisites and updates on messages that went through dnspython's
wire format and TSIG verification, so what is checked here is what a real server would receive.
The same behaviour against BIND is in ``tests/integration/test_rfc2136.py``.
"""

from __future__ import annotations

import json
import pickle
import socket
import threading
import traceback

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
import structlog

from agent.config import DnsServer, SecretUnavailable
from agent.dns.errors import error_for_exception, error_for_rcode
from agent.dns.names import canonical_rdata
from agent.dns.transport import TcpSession
from agent.domain.errors import DnsBatchError, DnsInvalidRequest, DnsPrerequisiteFailed
from agent.domain.model import RecordChange, RecordType
from agent.drivers.rfc2136 import Rfc2136Dns
from agent.errors import AgentError, TimeoutError_, UnreachableError
from agent.ports import Dns

ZONE = "example.test."
SECRET = "c3VwZXItc2VjcmV0LXRzaWcta2V5LW1hdGVyaWFsLTEyMzQ="
A, AAAA, PTR = RecordType.A, RecordType.AAAA, RecordType.PTR


class FakeServer:
    """An authoritative server for one zone, reached through a fake session."""

    def __init__(self, records: dict[tuple[str, str], tuple[int, set[str]]] | None = None) -> None:
        self.records = dict(records or {})
        self.keyring = {dns.name.from_text("agent-key"): dns.tsig.Key("agent-key", SECRET)}
        self.updates: list[dns.message.Message] = []
        self.queries = 0
        self.fail: list[BaseException | int] = []  # per update: raise it, or answer that rcode
        self.in_flight = None

    # --- the DnsSession seam
    def send(self, message):
        self.in_flight = message

    def receive(self, message):
        assert message is self.in_flight, "a reply was asked for a message that was not sent"
        self.in_flight = None
        wire = message.to_wire()  # signs with the driver's key, as on the network
        if self.fail:
            outcome = self.fail.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            parsed = dns.message.from_wire(wire, keyring=self.keyring)
            return self._reply(parsed, outcome)
        try:
            parsed = dns.message.from_wire(wire, keyring=self.keyring)
        except dns.tsig.BadSignature as exc:
            raise dns.tsig.PeerBadSignature from exc  # what the client sees from BIND
        self.updates.append(parsed)
        return self._reply(parsed, self._evaluate(parsed))

    def query_many(self, questions, *, recursion=False):
        replies = []
        for name, rdtype in questions:
            self.queries += 1
            q = dns.message.make_query(name, rdtype)
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            found = self.records.get((name.to_text(), dns.rdatatype.to_text(rdtype)))
            if found:
                ttl, values = found
                r.answer.append(dns.rrset.from_text_list(name, ttl, "IN", rdtype, sorted(values)))
            elif not any(n == name.to_text() for n, _ in self.records):
                r.set_rcode(dns.rcode.NXDOMAIN)
            replies.append(dns.message.from_wire(r.to_wire()))  # parsed, as from the network
        return replies

    def close(self):
        pass

    # --- RFC 2136 section 3.2 and 3.4, as far as the driver uses them
    def _evaluate(self, msg) -> int:
        # dnspython parses each RR of an update into its own RRset; a server gathers the
        # value-dependent prerequisites by name and type first (RFC 2136 3.2.5).
        pinned: dict[tuple[str, str], set[str]] = {}
        for rrset in msg.prerequisite:
            key = (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
            if rrset.deleting == dns.rdataclass.NONE:  # "RRset does not exist"
                if key in self.records:
                    return dns.rcode.YXRRSET
            elif rrset.deleting is None:  # value-dependent "RRset exists"
                pinned.setdefault(key, set()).update(canonical_rdata(rd) for rd in rrset)
        for key, values in pinned.items():  # ... and each must match the zone's RRset exactly
            if self.records.get(key, (0, set()))[1] != values:
                return dns.rcode.NXRRSET
        for rrset in msg.update:
            key = (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype))
            if rrset.deleting == dns.rdataclass.ANY:
                self.records.pop(key, None)
            elif rrset.deleting is None:
                _, values = self.records.get(key, (0, set()))
                self.records[key] = (rrset.ttl, values | {canonical_rdata(rd) for rd in rrset})
        return dns.rcode.NOERROR

    @staticmethod
    def _reply(parsed, rcode):
        r = dns.message.make_response(parsed)
        r.set_rcode(rcode)
        return r


def config(secret_ref: str = "env:TEST_DNS_SECRET", **kw) -> DnsServer:
    return DnsServer(
        name="dns1",
        kind="rfc2136",
        address=kw.pop("address", "192.0.2.53"),
        tsig={"name": "agent-key", "secret": secret_ref, **kw},
    )


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("TEST_DNS_SECRET", SECRET)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer(
        {
            ("host1.example.test.", "A"): (300, {"192.0.2.1"}),
            ("multi.example.test.", "A"): (300, {"192.0.2.2", "192.0.2.3"}),
        }
    )


def driver(server: FakeServer, batch_size: int = 100, **kw) -> Rfc2136Dns:
    return Rfc2136Dns(
        config(**kw), [ZONE, "2.0.192.in-addr.arpa."], batch_size=batch_size, session_factory=lambda: server
    )


def change(name, rtype=A, expected=(), new=(), ttl=60, zone=ZONE):
    return RecordChange(zone=zone, name=name, type=rtype, ttl=ttl, expected=tuple(expected), new_values=tuple(new))


# --------------------------------------------------------------------- the messages


def test_is_a_dns_port():
    assert isinstance(driver(FakeServer()), Dns)


def test_a_replace_pins_the_exact_rrset_then_deletes_and_adds(server):
    driver(server).apply(ZONE, [change("multi.example.test.", A, ["192.0.2.3", "192.0.2.2"], ["198.51.100.1"])])

    [msg] = server.updates
    assert msg.keyname == dns.name.from_text("agent-key")  # signed, and the signature verified
    assert [(p.name.to_text(), p.deleting, p.ttl) for p in msg.prerequisite] == [("multi.example.test.", None, 0)] * 2
    assert sorted(rd.to_text() for p in msg.prerequisite for rd in p) == ["192.0.2.2", "192.0.2.3"]
    delete, add = msg.update
    assert (delete.deleting, delete.rdtype, len(delete)) == (dns.rdataclass.ANY, dns.rdatatype.A, 0)
    assert (add.deleting, add.ttl, [rd.to_text() for rd in add]) == (None, 60, ["198.51.100.1"])
    assert server.records[("multi.example.test.", "A")] == (60, {"198.51.100.1"})
    assert server.queries == 0  # nothing was read: the prerequisite is the read


def test_a_create_pins_absence_and_a_delete_adds_nothing(server):
    driver(server).apply(
        ZONE,
        [change("new.example.test.", AAAA, [], ["2001:DB8::5"]), change("host1.example.test.", A, ["192.0.2.1"], [])],
    )
    [msg] = server.updates
    absent, present = msg.prerequisite
    assert (absent.name.to_text(), absent.deleting, absent.rdtype) == (
        "new.example.test.",
        dns.rdataclass.NONE,
        dns.rdatatype.AAAA,
    )
    assert (present.name.to_text(), present.deleting) == ("host1.example.test.", None)
    assert [(u.name.to_text(), u.deleting) for u in msg.update] == [
        ("new.example.test.", None),  # add only: nothing to delete under an absent pin
        ("host1.example.test.", dns.rdataclass.ANY),  # delete only
    ]
    assert server.records[("new.example.test.", "AAAA")] == (60, {"2001:db8::5"})
    assert ("host1.example.test.", "A") not in server.records


def test_ptr_values_are_sent_absolute_and_lower_case():
    server = FakeServer()
    driver(server).apply(
        "2.0.192.in-addr.arpa.",
        [change("10.2.0.192.in-addr.arpa.", PTR, [], ["Web.Example.Test"], zone="2.0.192.in-addr.arpa.")],
    )
    assert server.records[("10.2.0.192.in-addr.arpa.", "PTR")] == (60, {"web.example.test."})


@pytest.mark.parametrize(("n", "size", "sizes"), [(250, 100, [100, 100, 50]), (3, 1, [1, 1, 1]), (100, 100, [100])])
def test_changes_go_in_messages_of_batch_size(n, size, sizes):
    server = FakeServer()
    driver(server, batch_size=size).apply(
        ZONE, [change(f"h{i}.example.test.", A, [], [f"10.0.{i // 250}.{i % 250}"]) for i in range(n)]
    )
    assert [len(m.prerequisite) for m in server.updates] == sizes
    assert len(server.records) == n


# ------------------------------------------------------------------------ idempotency


def test_a_refused_batch_is_read_back_and_what_already_holds_is_left_out(server):
    server.records[("done.example.test.", "A")] = (60, {"198.51.100.1"})  # applied by an earlier try
    changes = [
        change("done.example.test.", A, [], ["198.51.100.1"]),
        change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.2"]),
    ]

    driver(server).apply(ZONE, changes)

    first, second = server.updates
    assert len(first.prerequisite) == 2 and len(second.prerequisite) == 1  # one RR per pin here
    assert second.prerequisite[0].name.to_text() == "host1.example.test."
    assert server.records[("host1.example.test.", "A")] == (60, {"198.51.100.2"})


def test_everything_already_holding_sends_nothing_more(server):
    changes = [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.2"])]
    driver(server).apply(ZONE, changes)
    driver(server).apply(ZONE, changes)
    assert len(server.updates) == 2  # the retry's message is refused, then found done
    assert server.records[("host1.example.test.", "A")] == (60, {"198.51.100.2"})


def test_a_ttl_only_change_is_read_first(server):
    same = change("host1.example.test.", A, ["192.0.2.1"], ["192.0.2.1"], ttl=300)
    driver(server).apply(ZONE, [same])
    assert server.updates == [] and server.queries == 1
    driver(server).apply(ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["192.0.2.1"], ttl=30)])
    assert len(server.updates) == 1 and server.records[("host1.example.test.", "A")] == (30, {"192.0.2.1"})


def test_a_conflict_names_the_rrset_and_what_was_found(server):
    with pytest.raises(DnsPrerequisiteFailed) as info:
        driver(server).apply(
            ZONE,
            [
                change("multi.example.test.", A, ["192.0.2.2"], ["198.51.100.1"]),
                change("new.example.test.", A, [], ["198.51.100.2"]),
            ],
        )
    err = info.value
    assert err.fields["conflicts"] == [
        {
            "record": "multi.example.test. A",
            "expected": ["192.0.2.2"],
            "found": ["192.0.2.2", "192.0.2.3"],
            "found_ttl": 300,
        }
    ]
    assert err.fields["records"] == ["multi.example.test. A", "new.example.test. A"]
    assert (err.fields["rcode"], err.fields["batch"], err.fields["batches"]) == ("NXRRSET", 1, 1)
    assert ("new.example.test.", "A") not in server.records
    assert len(server.updates) == 1


def test_a_second_refusal_without_a_visible_conflict_is_reported_not_chased(server):
    server.fail = [dns.rcode.NXRRSET, dns.rcode.NXRRSET, dns.rcode.NXRRSET]
    with pytest.raises(DnsPrerequisiteFailed) as info:
        driver(server).apply(ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.2"])])
    assert info.value.fields["conflicts"][0]["found"] == ["192.0.2.1"]
    assert server.fail == [dns.rcode.NXRRSET]  # two sends, not three


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("rcode", "code", "category"),
    [
        (dns.rcode.SERVFAIL, "dns_servfail", "transient"),
        (dns.rcode.REFUSED, "dns_refused", "permanent"),
        (dns.rcode.NOTAUTH, "dns_not_authoritative", "permanent"),
        (dns.rcode.NOTZONE, "dns_not_zone", "permanent"),
        (dns.rcode.FORMERR, "dns_rejected", "permanent"),
        (dns.rcode.NOTIMP, "dns_rejected", "permanent"),
    ]
    + [
        (rc, "dns_prerequisite_failed", "permanent")
        for rc in (dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET)
    ],
)
def test_rcodes_map_to_errors_by_what_the_caller_does_next(rcode, code, category):
    err = error_for_rcode(rcode, what="the update", zone=ZONE, server="dns1", address="192.0.2.53:53", key="agent-key")
    assert (err.code, err.category, err.fields["rcode"]) == (code, category, dns.rcode.to_text(rcode))
    assert err.fields["zone"] == ZONE and "dns1 (192.0.2.53:53)" in err.message
    assert error_for_rcode(dns.rcode.NOERROR, what="x") is None


@pytest.mark.parametrize(
    ("exc", "code", "category"),
    [
        (dns.tsig.PeerBadKey(), "dns_bad_key", "permanent"),
        (dns.tsig.PeerBadSignature(), "dns_bad_key", "permanent"),
        (dns.tsig.PeerBadTruncation(), "dns_bad_key", "permanent"),
        (dns.tsig.BadSignature(), "dns_bad_key", "permanent"),
        (dns.tsig.PeerBadTime(), "dns_bad_time", "permanent"),
        (dns.exception.Timeout(), "timeout", "transient"),
        (TimeoutError(), "timeout", "transient"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable", "transient"),
        (EOFError(), "unreachable", "transient"),
        (ConnectionResetError(), "unreachable", "transient"),
        (OSError(113, "No route to host"), "unreachable", "transient"),
        (dns.exception.TooBig(), "dns_invalid_request", "permanent"),
        (dns.query.BadResponse(), "dns_bad_response", "transient"),
        (dns.exception.FormError(), "dns_bad_response", "transient"),
    ],
)
def test_failures_map_to_errors(exc, code, category):
    err = error_for_exception(exc, what="the update", server="dns1", key="agent-key")
    assert (err.code, err.category) == (code, category)


def test_a_bug_is_not_mapped():
    assert error_for_exception(KeyError("x"), what="y") is None


def test_one_message_raises_its_own_error(server):
    server.fail = [dns.rcode.SERVFAIL]
    with pytest.raises(AgentError) as info:
        driver(server).apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    assert (info.value.code, info.value.transient) == ("dns_servfail", True)


def test_after_a_timeout_the_remaining_batches_are_reported_not_sent():
    server = FakeServer()
    server.fail = [dns.rcode.NOERROR, dns.exception.Timeout()]
    changes = [change(f"h{i}.example.test.", A, [], [f"198.51.100.{i}"]) for i in range(4)]
    with pytest.raises(DnsBatchError) as info:
        driver(server, batch_size=1).apply(ZONE, changes)
    err = info.value
    assert [(f.code, f.fields["batch"], f.fields.get("attempted", True)) for f in err.failures] == [
        ("timeout", 2, True),
        ("timeout", 3, False),
        ("timeout", 4, False),
    ]
    assert err.category == "transient" and err.fields["applied_batches"] == 1
    assert server.fail == []  # batches 3 and 4 never reached the server


def test_batch_error_category_follows_its_failures():
    t, p = TimeoutError_("t"), DnsPrerequisiteFailed("p")
    assert DnsBatchError("m", failures=[t, t]).category == "transient"
    assert DnsBatchError("m", failures=[t, p]).category == "permanent"
    again = pickle.loads(pickle.dumps(DnsBatchError("m", failures=[t, p], zone=ZONE)))
    assert [f.code for f in again.failures] == ["timeout", "dns_prerequisite_failed"]
    assert again.fields["zone"] == ZONE and again.category == "permanent"
    assert json.loads(json.dumps(again.to_dict()))["failures"][0]["code"] == "timeout"


def test_every_problem_of_a_malformed_call_is_reported_before_anything_is_sent(server):
    with pytest.raises(DnsInvalidRequest) as info:
        driver(server).apply(
            ZONE,
            [
                change("a.example.test.", A, [], ["2001:db8::1"]),
                change("b.other.test.", A, [], ["192.0.2.1"]),
                change("c.example.test.", A, [], ["192.0.2.1"], zone="other.test."),
                change("d.example.test.", A, [], ["192.0.2.1"]),
                change("D.example.test", A, [], ["192.0.2.2"]),
            ],
        )
    problems = info.value.fields["problems"]
    assert len(problems) == 4, problems
    assert "not a valid A value" in problems[0]
    assert "not in zone example.test." in problems[1]
    assert "belongs to zone other.test." in problems[2]
    assert "changed twice" in problems[3]
    assert server.updates == [] and server.queries == 0


def test_nothing_to_do_sends_nothing(server):
    driver(server).apply(ZONE, [])
    assert server.updates == [] and server.queries == 0


# ------------------------------------------------------------------------------ reads


def test_read_needs_authoritative_answers(server):
    class NotAuthoritative(FakeServer):
        def query_many(self, questions, *, recursion=False):
            replies = super().query_many(questions, recursion=recursion)
            for r in replies:
                r.flags &= ~dns.flags.AA
            return replies

    with pytest.raises(AgentError) as info:
        driver(NotAuthoritative(server.records)).read(ZONE, [("host1.example.test.", A)])
    assert info.value.code == "dns_not_authoritative"


def test_read_refuses_names_outside_the_zone(server):
    with pytest.raises(DnsInvalidRequest):
        driver(server).read(ZONE, [("host1.other.test.", A)])


def test_zone_for_prefers_the_longest_configured_zone_then_asks_the_server():
    class Soa(FakeServer):
        def query_many(self, questions, *, recursion=False):
            [(name, rdtype)] = questions
            r = dns.message.make_response(dns.message.make_query(name, rdtype))
            r.flags |= dns.flags.AA
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority.append(
                dns.rrset.from_text("8.b.d.0.1.0.0.2.ip6.arpa.", 60, "IN", "SOA", "ns1. host. 1 2 3 4 5")
            )
            return [r]

    d = Rfc2136Dns(config(), [ZONE, "sub.example.test."], session_factory=Soa)
    assert d.zone_for("a.sub.example.test") == "sub.example.test."
    assert d.zone_for("a.example.test.") == "example.test."
    assert d.zone_for(d.reverse_name("2001:db8::1")) == "8.b.d.0.1.0.0.2.ip6.arpa."


# ---------------------------------------------------------------------------- secrets


def test_the_secret_is_read_only_when_a_call_needs_it(monkeypatch, server):
    monkeypatch.delenv("TEST_DNS_SECRET")
    d = driver(server)  # building the driver does not need the secret
    with pytest.raises(SecretUnavailable):
        d.apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    monkeypatch.setenv("TEST_DNS_SECRET", SECRET)
    d.apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])  # rotated in: used at once


def test_a_secret_that_is_not_base64_is_a_bad_key_that_does_not_quote_it(monkeypatch, server):
    monkeypatch.setenv("TEST_DNS_SECRET", "not base64 at all!")
    with pytest.raises(AgentError) as info:
        driver(server).apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
    err = info.value
    assert err.code == "dns_bad_key" and "env:TEST_DNS_SECRET" in str(err)
    text = str(err) + repr(err) + json.dumps(err.to_dict()) + "".join(traceback.format_exception(err))
    assert "not base64 at all" not in text


def test_the_secret_never_shows(server, capsys):
    wrong = "d3Jvbmctc2VjcmV0LWZvci10aGUtdW5pdC10ZXN0LW9ubHk="
    texts = []
    with structlog.testing.capture_logs() as events:
        d = driver(server)
        texts.append(repr(d))
        d.apply(ZONE, [change("host1.example.test.", A, ["192.0.2.1"], ["198.51.100.2"])])
        server.records[("x.example.test.", "A")] = (60, {"203.0.113.1"})
        for call in (
            lambda: d.apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])]),
            lambda: Rfc2136Dns(config("env:WRONG_SECRET"), [ZONE], session_factory=lambda: server).apply(
                ZONE, [change("y.example.test.", A, [], ["198.51.100.1"])]
            ),
        ):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("WRONG_SECRET", wrong)
                with pytest.raises(AgentError) as info:
                    call()
            err = info.value
            texts += [str(err), repr(err), json.dumps(err.to_dict()), "".join(traceback.format_exception(err))]
    assert [e["event"] for e in events].count("dns.apply") == 3
    texts += [repr(e) for e in events] + list(capsys.readouterr())
    blob = "\n".join(texts)
    assert SECRET not in blob and wrong not in blob
    assert "agent-key" in blob  # the key's name is fine, and useful


def test_constructor_checks():
    with pytest.raises(ValueError, match="not 'rfc2136'"):
        Rfc2136Dns(DnsServer(name="s", kind="sim"), [])
    with pytest.raises(ValueError, match="batch_size"):
        Rfc2136Dns(config(), [], batch_size=0)
    d = Rfc2136Dns(config(address="2001:db8::53"), ["Example.Test"])
    assert d.zones == ("example.test.",) and d.name == "dns1"
    assert "'[2001:db8::53]:53'" in repr(d) and SECRET not in repr(d)


# -------------------------------------------------------------------------- transport


def test_a_server_that_accepts_but_never_answers_is_a_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    t.start()
    try:
        cfg = DnsServer(
            name="mute",
            kind="rfc2136",
            address="127.0.0.1",
            port=port,
            timeout_s=0.3,
            tsig={"name": "agent-key", "secret": "env:TEST_DNS_SECRET"},
        )
        with pytest.raises(TimeoutError_) as info:
            Rfc2136Dns(cfg, [ZONE]).apply(ZONE, [change("x.example.test.", A, [], ["198.51.100.1"])])
        assert info.value.fields["address"] == f"127.0.0.1:{port}"
    finally:
        t.join(2)
        for conn, _ in accepted:
            conn.close()
        listener.close()


def test_a_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    cfg = DnsServer(
        name="gone",
        kind="rfc2136",
        address="127.0.0.1",
        port=port,
        tsig={"name": "agent-key", "secret": "env:TEST_DNS_SECRET"},
    )
    with pytest.raises(UnreachableError):
        Rfc2136Dns(cfg, [ZONE]).read(ZONE, [("host1.example.test.", A)])


def test_tcp_session_reconnects_after_a_failure():
    session = TcpSession("127.0.0.1", 9, 0.2)  # discard port: nothing listens here
    with pytest.raises(OSError):
        session.query_many([(dns.name.from_text("a.test."), dns.rdatatype.A)])
    assert session._sock is None
    session.close()
