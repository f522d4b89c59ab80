"""After an update: does every authoritative server answer the new data, and what do caches hold?

Clients find a re-addressed service only through DNS, so "the update was accepted" is not the
end: each authoritative server of the zone (the primary and every secondary the NS set names)
must answer the new records, and resolvers keep serving the old ones until their TTL runs out.
:func:`verify` polls every authoritative server until all of them answer the expected data or a
timeout passes, and returns a :class:`VerifyReport` that names each lagging server, what it still
answers and how long it was waited on. With ``resolvers``, it also asks those (recursively, once,
at the end) and reports what they still cache and for how many seconds (the TTL they return
counts down; for a cached "no such record" it is the negative TTL of RFC 2308).

Independent of any driver: plain dnspython queries over TCP through
:class:`~agent.dns.transport.TcpSession` (or any :class:`~agent.dns.transport.DnsSession`).
Authoritative answers must carry the AA flag; an answer without it counts as an error for that
round (the server does not hold the zone, so its answer proves nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.tsig

from agent.config import DnsServer
from agent.dns.errors import error_for_exception, error_for_rcode
from agent.dns.names import canonical_rdata, canonical_values, record_label, to_dns_name
from agent.dns.transport import DnsSession, Question, TcpSession
from agent.domain.errors import DnsNotAuthoritative, DnsRefused
from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.errors import AgentError

SessionFactory = Callable[[str, int, float], DnsSession]


@dataclass(frozen=True, slots=True)
class Nameserver:
    """Where to ask: an address and port, and the NS name it was found under (if any)."""

    host: str
    port: int = 53
    name: str | None = None

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name} ({host}:{self.port})" if self.name else f"{host}:{self.port}"


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """Where a config names a server to ask: ``host``, ``host:port``, ``[v6]:port`` or a bare
    IPv6 address."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or default_port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


@dataclass(frozen=True, slots=True)
class Expected:
    """An RRset as it must be answered after the update. ``values`` empty: it must not exist.
    ``ttl`` None: any TTL will do."""

    name: str
    type: RecordType
    values: tuple[str, ...]
    ttl: int | None = None

    @classmethod
    def of(cls, item: Expected | RecordChange | RecordSet) -> Expected:
        if isinstance(item, Expected):
            return cls(to_dns_name(item.name).to_text(), item.type, canonical_values(item.type, item.values), item.ttl)
        if isinstance(item, RecordChange):
            values = canonical_values(item.type, item.new_values)
            return cls(to_dns_name(item.name).to_text(), item.type, values, item.ttl if values else None)
        return cls(to_dns_name(item.name).to_text(), item.type, canonical_values(item.type, item.values), item.ttl)

    @property
    def label(self) -> str:
        return record_label(self.name, self.type)

    def matches(self, answer: Answer) -> bool:
        if answer.values != self.values:
            return False
        return not self.values or self.ttl is None or answer.ttl == self.ttl


@dataclass(frozen=True, slots=True)
class Answer:
    """What one server answered for one RRset: ``values`` empty when it has none. ``ttl`` is the
    RRset's TTL, or for no RRset the negative-caching TTL (RFC 2308: the authority SOA's TTL,
    capped by its minimum) when the reply carries one."""

    name: str
    type: RecordType
    values: tuple[str, ...]
    ttl: int | None

    def describe(self) -> str:
        what = f"[{', '.join(self.values)}]" if self.values else "nothing"
        ttl = f" ttl {self.ttl}" if self.ttl is not None else ""
        return f"{record_label(self.name, self.type)} -> {what}{ttl}"


@dataclass(frozen=True, slots=True)
class ServerReport:
    """One authoritative server. ``waited_s``: from the start until it answered everything
    expected, or until the verifier gave up on it. ``stale``: its last answers that still differ
    from what is expected (empty once converged). ``error``: the last round's failure, if any."""

    server: Nameserver
    converged: bool
    waited_s: float
    rounds: int
    stale: tuple[Answer, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: Answer
    current: bool
    """The resolver already answers the expected values."""

    @property
    def ttl_remaining(self) -> int | None:
        return self.answer.ttl


@dataclass(frozen=True, slots=True)
class ResolverReport:
    resolver: Nameserver
    answers: tuple[CachedAnswer, ...] = ()
    error: str | None = None

    @property
    def stale_for_s(self) -> int:
        """For how many more seconds this resolver may keep answering old data (0: none)."""
        return max((a.ttl_remaining or 0 for a in self.answers if not a.current), default=0)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    zone: str
    servers: tuple[ServerReport, ...]
    resolvers: tuple[ResolverReport, ...] = ()
    unresolved: tuple[str, ...] = ()
    """NS names of the zone that have no address: they could not be checked."""
    elapsed_s: float = 0.0
    expected: tuple[Expected, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """Every authoritative server answers the new data (and every NS name had an address)."""
        return bool(self.servers) and all(s.converged for s in self.servers) and not self.unresolved

    @property
    def lagging(self) -> tuple[ServerReport, ...]:
        return tuple(s for s in self.servers if not s.converged)

    def summary(self) -> str:
        n, took = len(self.servers), f"{self.elapsed_s:.2f} s"
        if self.ok:
            head = f"all {n} authoritative servers answer the new data ({took})"
        else:
            head = f"{len(self.lagging)} of {n} authoritative servers lag after {took}"
        lines = [f"zone {self.zone}: {head}"]
        for s in self.servers:
            if s.converged:
                lines.append(f"  ok   {s.server.label}: new data after {s.waited_s:.2f} s")
            else:
                still = "; ".join(a.describe() for a in s.stale) or "no answer"
                err = f" (last error: {s.error})" if s.error else ""
                lines.append(f"  LAG  {s.server.label}: still answers {still}; waited {s.waited_s:.2f} s{err}")
        for name in self.unresolved:
            lines.append(f"  ??   {name}: NS name without an address, not checked")
        for r in self.resolvers:
            if r.error:
                lines.append(f"  resolver {r.resolver.label}: {r.error}")
            for a in r.answers:
                if not a.current:
                    lines.append(
                        f"  resolver {r.resolver.label}: caches {a.answer.describe()} for {a.ttl_remaining or 0} s more"
                    )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
            "servers": [
                {
                    "server": s.server.label,
                    "converged": s.converged,
                    "waited_s": round(s.waited_s, 3),
                    "rounds": s.rounds,
                    "stale": [a.describe() for a in s.stale],
                    "error": s.error,
                }
                for s in self.servers
            ],
            "unresolved": list(self.unresolved),
            "resolvers": [
                {
                    "resolver": r.resolver.label,
                    "error": r.error,
                    "stale_for_s": r.stale_for_s,
                    "stale": [a.answer.describe() for a in r.answers if not a.current],
                }
                for r in self.resolvers
            ],
        }


@dataclass
class _Progress:
    rounds: int = 0
    converged_after: float | None = None
    stale: tuple[Answer, ...] = ()
    error: str | None = None


def _tcp(host: str, port: int, timeout: float) -> DnsSession:
    return TcpSession(host, port, timeout)


def _as_nameserver(s: Nameserver | tuple[str, int]) -> Nameserver:
    return s if isinstance(s, Nameserver) else Nameserver(s[0], s[1])


def ask(
    server: Nameserver,
    questions: Sequence[tuple[str, RecordType]],
    *,
    recursion: bool = False,
    timeout_s: float = 2.0,
    session_factory: SessionFactory = _tcp,
) -> list[Answer]:
    """One round of queries to one server, pipelined over one TCP connection. Without
    ``recursion`` every reply must be authoritative. Raises the agent error of a failure."""
    keys: list[Question] = [(to_dns_name(n), dns.rdatatype.from_text(str(t))) for n, t in questions]
    fields = {"server": server.label}
    session = session_factory(server.host, server.port, timeout_s)
    try:
        replies = session.query_many(keys, recursion=recursion)
    except Exception as exc:
        err = error_for_exception(exc, what=f"{len(keys)} queries", **fields)
        if err is None:
            raise
        raise err from exc
    finally:
        session.close()
    answers = []
    for (qname, rdtype), (_, rtype), reply in zip(keys, questions, replies, strict=True):
        label = record_label(qname.to_text(), rtype)
        rcode = reply.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            err = error_for_rcode(rcode, what=f"the query for {label}", record=label, **fields)
            assert err is not None
            raise err
        if not recursion and not reply.flags & dns.flags.AA:
            raise DnsNotAuthoritative(f"{server.label} answered {label} without authority", record=label, **fields)
        answers.append(_answer(reply, qname, rdtype, RecordType(rtype)))
    return answers


def _answer(reply: dns.message.Message, qname: dns.name.Name, rdtype: int, rtype: RecordType) -> Answer:
    rrset = reply.get_rrset(reply.answer, qname, dns.rdataclass.IN, dns.rdatatype.RdataType(rdtype))
    if rrset is not None and len(rrset):
        return Answer(qname.to_text(), rtype, tuple(sorted({canonical_rdata(rd) for rd in rrset})), rrset.ttl)
    negative_ttl = next(
        (min(rr.ttl, rr[0].minimum) for rr in reply.authority if rr.rdtype == dns.rdatatype.SOA and len(rr)),
        None,
    )
    return Answer(qname.to_text(), rtype, (), negative_ttl)


def nameservers(
    zone: str,
    *,
    via: Nameserver | tuple[str, int],
    port: int = 53,
    timeout_s: float = 2.0,
    session_factory: SessionFactory = _tcp,
) -> tuple[list[Nameserver], list[str]]:
    """The zone's authoritative servers from its NS set, asked of ``via``, each NS name resolved
    to its addresses (glue in the reply, else A/AAAA asked of ``via``, else the system resolver).
    ``port`` is the port the found servers are asked on. Returns (servers, NS names without an
    address)."""
    via = _as_nameserver(via)
    zone_name = to_dns_name(zone)
    fields = {"server": via.label, "zone": zone_name.to_text()}
    session = session_factory(via.host, via.port, timeout_s)
    try:
        try:
            reply = session.query_many([(zone_name, dns.rdatatype.NS)])[0]
        except Exception as exc:
            err = error_for_exception(exc, what=f"the NS query for {zone_name}", **fields)
            if err is None:
                raise
            raise err from exc
        err = error_for_rcode(reply.rcode(), what=f"the NS query for {zone_name}", **fields)
        if err is not None:
            raise err
        ns_set = reply.get_rrset(reply.answer, zone_name, dns.rdataclass.IN, dns.rdatatype.NS)
        if ns_set is None or not reply.flags & dns.flags.AA:
            raise DnsNotAuthoritative(f"{via.label} gave no authoritative NS set for {zone_name}", **fields)
        found: list[Nameserver] = []
        unresolved: list[str] = []
        for target in sorted({rd.target.canonicalize() for rd in ns_set}):
            addresses = [
                rd.address
                for rr in reply.additional
                if rr.name == target and rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                for rd in rr
            ]
            if not addresses:
                addresses = _addresses_from(session, target)
            if not addresses:
                addresses = _addresses_from_system(target, timeout_s)
            if not addresses:
                unresolved.append(target.to_text())
            found.extend(Nameserver(a, port, target.to_text()) for a in sorted(set(addresses)))
    finally:
        session.close()
    return found, unresolved


def _addresses_from(session: DnsSession, target: dns.name.Name) -> list[str]:
    try:
        replies = session.query_many([(target, dns.rdatatype.A), (target, dns.rdatatype.AAAA)])
    except Exception:
        return []
    return [
        rd.address
        for reply, rdtype in zip(replies, (dns.rdatatype.A, dns.rdatatype.AAAA), strict=True)
        if reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        for rrset in [reply.get_rrset(reply.answer, target, dns.rdataclass.IN, rdtype)]
        if rrset is not None
        for rd in rrset
    ]


def _addresses_from_system(target: dns.name.Name, timeout_s: float) -> list[str]:
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout_s
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            addresses += [rd.address for rd in resolver.resolve(target, rdtype)]
        except dns.exception.DNSException:
            continue
    return addresses


def verify(
    zone: str,
    expected: Sequence[Expected | RecordChange | RecordSet],
    *,
    servers: Sequence[Nameserver | tuple[str, int]] | None = None,
    via: Nameserver | tuple[str, int] | None = None,
    ns_port: int = 53,
    resolvers: Sequence[Nameserver | tuple[str, int]] = (),
    timeout_s: float = 30.0,
    interval_s: float = 0.25,
    query_timeout_s: float = 2.0,
    session_factory: SessionFactory = _tcp,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyReport:
    """Poll the zone's authoritative servers until each answers every ``expected`` RRset (values,
    and TTL when given) or ``timeout_s`` passes; then, once, ask ``resolvers``.

    The servers are ``servers`` when given, else the zone's NS set asked of ``via`` (see
    :func:`nameservers`; found servers are asked on ``ns_port``). A server that converged is not
    asked again. Query failures (timeouts, refusals) do not end the wait: they are kept as the
    server's ``error`` and the server is asked again next round.
    """
    if servers is None and via is None:
        raise ValueError("verify needs servers to ask, or via (a server to ask for the zone's NS set)")
    zone_text = to_dns_name(zone).to_text()
    wanted = tuple(Expected.of(e) for e in expected)
    questions = [(e.name, e.type) for e in wanted]
    start = clock()
    unresolved: list[str] = []
    if servers is not None:
        targets = [_as_nameserver(s) for s in servers]
    else:
        assert via is not None
        targets, unresolved = nameservers(
            zone_text, via=via, port=ns_port, timeout_s=query_timeout_s, session_factory=session_factory
        )

    state = {t: _Progress() for t in targets}
    deadline = start + timeout_s
    while True:
        for server, st in state.items():
            if st.converged_after is not None:
                continue
            st.rounds += 1
            try:
                answers = ask(server, questions, timeout_s=query_timeout_s, session_factory=session_factory)
            except AgentError as err:
                st.error = f"{err.code}: {err.message}"
                continue
            st.error = None
            st.stale = tuple(a for e, a in zip(wanted, answers, strict=True) if not e.matches(a))
            if not st.stale:
                st.converged_after = clock() - start
        now = clock()
        if all(st.converged_after is not None for st in state.values()) or now >= deadline:
            break
        sleep(max(0.0, min(interval_s, deadline - now)))
    end = clock()
    reports = tuple(
        ServerReport(
            server=server,
            converged=st.converged_after is not None,
            waited_s=st.converged_after if st.converged_after is not None else end - start,
            rounds=st.rounds,
            stale=st.stale if st.converged_after is None else (),
            error=st.error if st.converged_after is None else None,
        )
        for server, st in state.items()
    )
    resolver_reports = tuple(
        _ask_resolver(_as_nameserver(r), wanted, questions, query_timeout_s, session_factory) for r in resolvers
    )
    return VerifyReport(
        zone=zone_text,
        servers=reports,
        resolvers=resolver_reports,
        unresolved=tuple(unresolved),
        elapsed_s=end - start,
        expected=wanted,
    )


def verify_update(server: DnsServer, zone: str, changes: Sequence[RecordChange]) -> VerifyReport | None:
    """After an update to ``server``: :func:`verify` against the zone's authoritative servers the
    config names (``verify_servers``, else the server itself) and its ``verify_resolvers``, with
    its ``verify_timeout_s``. ``None`` when verification is off (timeout 0) or nothing changed."""
    if server.verify_timeout_s == 0 or not changes or not server.address:
        return None
    servers = [host_port(s, 53) for s in server.verify_servers] or [(server.address, server.port)]
    resolvers = [host_port(s, 53) for s in server.verify_resolvers]
    return verify(zone, changes, servers=servers, resolvers=resolvers, timeout_s=server.verify_timeout_s,
                  query_timeout_s=min(2.0, server.timeout_s))


def _ask_resolver(
    resolver: Nameserver,
    wanted: tuple[Expected, ...],
    questions: list[tuple[str, RecordType]],
    timeout_s: float,
    session_factory: SessionFactory,
) -> ResolverReport:
    try:
        answers = ask(resolver, questions, recursion=True, timeout_s=timeout_s, session_factory=session_factory)
    except AgentError as err:
        return ResolverReport(resolver, error=f"{err.code}: {err.message}")
    # A resolver counts its TTL down, so only the values say whether it already has the news.
    return ResolverReport(
        resolver, tuple(CachedAnswer(a, a.values == e.values) for e, a in zip(wanted, answers, strict=True))
    )


# ------------------------------------------------------------------------- before an update


def signed_soa(session_factory: Callable[[], DnsSession], zone: dns.name.Name, key: dns.tsig.Key,
               fields: dict[str, Any]) -> str:
    """Before any update (preflight): the SOA of ``zone``, asked with a query signed by ``key``,
    and the signed reply verified. A wrong secret or an unknown key fails here -- BIND answers
    BADSIG / BADKEY, raised as ``dns_bad_key`` -- instead of at the first update, after VMs have
    moved; reads are unsigned, so nothing else proves the key first. It cannot prove that the key
    may *update* the zone: a server consults its update policy only for updates.

    ``fields`` name the server (as the driver's errors do); returns what it answered."""
    fields = dict(fields, zone=zone.to_text())
    what = f"the signed SOA query for zone {zone}"
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.use_tsig(key, keyname=key.name, algorithm=key.algorithm)
    session = session_factory()
    try:
        session.send(query)
        reply = session.receive(query)
    except Exception as exc:
        err = error_for_exception(exc, what=what, **fields)
        if err is None:
            raise
        raise err from exc
    finally:
        session.close()
    server = f"DNS server {fields.get('server')} ({fields.get('address')})"
    if reply.rcode() == dns.rcode.REFUSED:  # to a query, not an update: no policy about keys
        raise DnsRefused(f"{server} refused {what} (REFUSED): it does not serve this zone, or does not answer "
                         "the agent's queries", rcode="REFUSED", **fields)
    err = error_for_rcode(reply.rcode(), what=what, **fields)
    if err is not None:
        raise err
    soa = reply.get_rrset(reply.answer, zone, dns.rdataclass.IN, dns.rdatatype.SOA)
    if not reply.flags & dns.flags.AA or soa is None or len(soa) == 0:
        raise DnsNotAuthoritative(f"{server} does not serve zone {zone} with authority "
                                  f"(it answered {dns.rcode.to_text(reply.rcode())} without the zone's SOA)", **fields)
    return (f"{server} serves zone {zone} (SOA serial {soa[0].serial}) and its reply to a query signed with "
            f"TSIG key {fields.get('key')!r} verifies")
