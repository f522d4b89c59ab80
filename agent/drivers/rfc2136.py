"""The :class:`~agent.ports.Dns` port over RFC 2136 dynamic updates signed with TSIG, on dnspython.

Works with any server that takes RFC 2136 updates signed with HMAC TSIG (``tsig``) or with
GSS-TSIG, RFC 3645 (``gss_tsig``: a Kerberos context negotiated in a TKEY exchange, what
AD-integrated Windows zones accept; :mod:`agent.dns.gss`). BIND 9 with a throwaway MIT KDC is
what the tests run; Windows itself is not tested here. Everything travels over TCP: reads, SOA
lookups, TKEY negotiations and updates. A GSS-TSIG update is signed when it is sent, with the
context valid then; one refused with BADKEY/BADSIG (the server lost the context) is signed
with a fresh one and sent once more.

**Pinning a record set.** Each :class:`~agent.domain.model.RecordChange` becomes, inside one
update message:

* a prerequisite on the RRset the caller expects: ``absent(name, type)`` when ``expected`` is
  empty, else one ``present(name, type, value)`` per expected value. RFC 2136 section 2.4.2
  makes value-dependent prerequisites compare *whole RRsets*: the server gathers them by name and
  type and the zone's RRset must "match exactly" -- a missing value *or an extra one* fails the
  prerequisite with NXRRSET. (Checked on BIND 9.18: pinning [a] while the zone holds [a, b] is
  refused, see ``tests/integration/test_rfc2136.py::test_extra_value_fails_the_pin``.) So the
  pin is exact without reading anything;
* then ``delete(name, type)`` (only when something is expected) and ``add`` of ``new_values``
  with the change's TTL. Updates in one message apply in order (section 3.4.2), so delete-then-
  add replaces exactly the pinned RRset; an empty ``new_values`` leaves it deleted.

**Idempotency: the prerequisite is the read.** The server evaluates the prerequisites and the
updates atomically, so a change is sent optimistically and the server does the compare-and-swap.
If the message is refused for a prerequisite, the driver reads the batch's record sets back and
sorts its changes: those whose ``new_values`` and TTL already hold are left out (a retry of
something that did apply), those whose RRset is neither expected nor new are *conflicts*
(somebody else changed it) and fail the batch, naming each RRset with what was expected and what
was found; the rest is sent again once. A change whose ``expected`` equals its ``new_values``
(a TTL change) cannot show through its prerequisite whether it already holds, so those alone are
read before sending. Why not read everything first, as DESIGN.md's rule reads: the read is one
query per RRset, which costs several times the batched update itself (here 1,000 pipelined
reads take ~0.45 s, the 1,000 changes in ten messages ~0.1 s: ``tests/benchmarks/RESULTS-dns.md``);
and the client's read could only ever be advisory, because the server's prerequisite check is
what closes the race. Outcome is the same: nothing already in place is rewritten, nothing
foreign is overwritten. Reads are plain (unsigned) queries, as a client's are: a forged answer
could at worst make the driver leave out a change or report a conflict, never overwrite; run
:func:`agent.dns.verify.verify` after an apply to see what every server answers.

**Batches.** A zone's changes go in messages of ``batch_size`` changes (default 100). Each
message is atomic on the server; several messages are not atomic together. Messages go one at a
time on one connection, and the next one is built while the server applies the current one.
Every message is tried -- except that after a timeout or an unreachable server the ones not yet
sent are reported as not attempted (``attempted=False``) instead of each waiting out the
timeout. One message in all: its error is raised as is, and nothing applied. Several: a
:class:`~agent.domain.errors.DnsBatchError` whose ``failures`` hold one error per failed message,
each naming its records -- **and the messages that succeeded stay applied**, so the caller
re-reads before deciding anything (retrying the same call is safe: what applied already holds
and is left out).

**Secrets.** The TSIG secret is fetched from its :class:`~agent.config.SecretRef` at the start of
each call and lives in a local ``dns.tsig.Key`` (and the update messages signed with it) for
that call only -- never on ``self``, in a log event or in an error (``dns.tsig.Key.__repr__``
prints the secret, so the key object itself must never be logged or stored). A GSS-TSIG context
is no configured secret: the driver's signer keeps it until it nears expiry, so a failover does
not negotiate per call; the Kerberos keys stay in the keytab or ccache.
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import structlog

from agent.config import DnsServer
from agent.dns.errors import error_for_exception, error_for_rcode
from agent.dns.gss import GssSigner
from agent.dns.names import (
    canonical_name,
    canonical_rdata,
    record_label,
    reverse_name,
    to_dns_name,
)
from agent.dns.pinning import Pinned, conflict, pin, update_message
from agent.dns.transport import DnsSession, Question, TcpSession
from agent.dns.verify import VerifyReport, signed_soa, verify_update
from agent.domain.errors import DnsBadKey, DnsBatchError, DnsInvalidRequest, DnsNotAuthoritative, DnsPrerequisiteFailed
from agent.domain.model import RecordChange, RecordSet, RecordType
from agent.errors import AgentError, TimeoutError_, UnreachableError

log = structlog.get_logger(__name__)

_ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,  # HMAC-MD5.SIG-ALG.REG.INT, not "hmac-md5."
}


class Rfc2136Dns:
    """One RFC 2136 server (``DnsServer`` of kind ``rfc2136``) and the zones it serves.

    ``zones`` are the configured zones (used by :meth:`zone_for`); a zone not listed can still be
    read and updated, e.g. a reverse zone found with :meth:`find_zone`. ``session_factory`` is
    the I/O seam (default: a :class:`~agent.dns.transport.TcpSession` to the server with its
    ``timeout_s``); each public call opens one session and closes it.
    """

    def __init__(
        self,
        server: DnsServer,
        zones: Iterable[str] = (),
        *,
        batch_size: int = 100,
        session_factory: Callable[[], DnsSession] | None = None,
    ) -> None:
        if server.kind != "rfc2136":
            raise ValueError(f"DNS server {server.name} is of kind {server.kind!r}, not 'rfc2136'")
        if not server.address or (server.tsig is None) == (server.gss_tsig is None):
            raise ValueError(
                f"DNS server {server.name} needs an address and one of tsig or gss_tsig for RFC 2136 updates"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
        self.name: str = server.name
        self.zones: tuple[str, ...] = tuple(canonical_name(z) for z in zones)
        self.batch_size = batch_size
        self._server = server
        self._tsig = server.tsig
        host = f"[{server.address}]" if ":" in server.address else server.address
        self._fields: dict[str, Any] = {
            "server": server.name,
            "address": f"{host}:{server.port}",
            "key": server.tsig.name if server.tsig is not None else server.gss_tsig.principal,  # type: ignore[union-attr]
        }
        address, port, timeout = server.address, server.port, server.timeout_s
        self._session_factory = session_factory or (lambda: TcpSession(address, port, timeout))
        self._gss: GssSigner | None = None
        if server.gss_tsig is not None:
            self._gss = GssSigner(server.gss_tsig, server.address, self._session_factory, self._fields)

    def __repr__(self) -> str:
        if self._gss is not None:
            signing = (f"gss_principal={self._gss.principal!r}, server_principal={self._gss.server_principal!r}, "
                       "algorithm='gss-tsig'")
        else:
            assert self._tsig is not None
            signing = f"key={self._tsig.name!r}, algorithm={self._tsig.algorithm!r}"
        return (
            f"Rfc2136Dns(name={self.name!r}, address={self._fields['address']!r}, {signing}, "
            f"zones={list(self.zones)!r}, batch_size={self.batch_size})"
        )

    # -------------------------------------------------------------- verification

    def verify(self, zone: str, changes: Sequence[RecordChange]) -> VerifyReport | None:
        """:func:`agent.dns.verify.verify_update` on this server's configuration."""
        return verify_update(self._server, zone, changes)

    # ------------------------------------------------------------------- reads

    def read(self, zone: str, names: Sequence[tuple[str, RecordType]]) -> list[RecordSet]:
        """The RRsets that exist among ``names``, in input order (duplicates once), with
        fully-qualified lower-case names and sorted canonical values. Queries are plain
        (unsigned) and must be answered with authority (AA), else ``dns_not_authoritative``."""
        zone_name = self._zone_name(zone)
        keys: list[tuple[dns.name.Name, dns.rdatatype.RdataType]] = []
        types: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], RecordType] = {}
        problems = []
        for raw_name, rtype in names:
            try:
                name = to_dns_name(raw_name)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if not name.is_subdomain(zone_name):
                problems.append(f"{name} is not in zone {zone_name}")
                continue
            key = (name, dns.rdatatype.from_text(str(rtype)))
            if key not in types:
                keys.append(key)
                types[key] = RecordType(rtype)
        if problems:
            raise DnsInvalidRequest(
                f"cannot read from zone {zone_name}: " + "; ".join(problems),
                zone=zone_name.to_text(),
                problems=problems,
            )
        if not keys:
            return []
        session = self._session_factory()
        try:
            found = self._read_sets(session, zone_name, keys, types)
        finally:
            session.close()
        return [rs for rs in (found[k] for k in keys) if rs is not None]

    def find_zone(self, name: str) -> str:
        """The zone (on this server) that holds ``name``, by one SOA query: the answer's SOA if
        ``name`` is an apex, else the SOA an authoritative server puts in the authority section of
        its NXDOMAIN / NODATA answer (RFC 2308 section 3). For reverse zones not in the config,
        e.g. ``find_zone(reverse_name("2001:db8::1"))``.

        ``dns.resolver.zone_for_name`` does the same walk through a recursive resolver; here the
        configured authoritative server is asked directly, over TCP, with the driver's errors.
        """
        qname = self._dns_name(name)
        fields = dict(self._fields, record=qname.to_text())
        session = self._session_factory()
        try:
            reply = self._query(session, [(qname, dns.rdatatype.SOA)], what=f"the SOA query for {qname}", **fields)[0]
        finally:
            session.close()
        err = (
            None
            if reply.rcode() == dns.rcode.NXDOMAIN
            else error_for_rcode(reply.rcode(), what=f"the SOA query for {qname}", **fields)
        )
        if err is not None:
            raise err
        if reply.flags & dns.flags.AA:
            if reply.get_rrset(reply.answer, qname, dns.rdataclass.IN, dns.rdatatype.SOA) is not None:
                return qname.to_text()
            for rrset in reply.authority:
                if rrset.rdtype == dns.rdatatype.SOA and qname.is_subdomain(rrset.name):
                    return canonical_name(rrset.name)
        raise DnsNotAuthoritative(
            f"DNS server {self.name} ({self._fields['address']}) holds no zone containing {qname}", **fields
        )

    def zone_for(self, name: str) -> str:
        """The longest configured zone containing ``name``; else :meth:`find_zone`."""
        qname = self._dns_name(name)
        best = max(
            (dns.name.from_text(z) for z in self.zones if qname.is_subdomain(dns.name.from_text(z))),
            key=len,
            default=None,
        )
        return best.to_text() if best is not None else self.find_zone(qname.to_text())

    reverse_name = staticmethod(reverse_name)

    # ----------------------------------------------------------------- updates

    def apply(self, zone: str, changes: Sequence[RecordChange]) -> None:
        """Apply ``changes`` to ``zone``, each pinned to its ``expected`` RRset (see the module
        docstring for the pin, the batches and what a failure leaves applied).

        Raises :class:`~agent.domain.errors.DnsInvalidRequest` before sending anything when a change
        is malformed (another zone, a name outside the zone, the same RRset twice, a value that is
        not of its type); a read or a message failure as the ``agent.errors`` type of its code; and
        :class:`~agent.domain.errors.DnsBatchError` when the zone took several messages and any
        failed.
        """
        zone_name = self._zone_name(zone)
        pinned = pin(zone_name, changes, self._fields)
        if not pinned:
            return
        zone_text = zone_name.to_text()
        ctx = dict(self._fields, zone=zone_text)
        session = self._session_factory()
        try:
            key = self._signing_key()
            pending = pinned
            already = [c for c in pinned if c.expected == c.new]
            if already:
                current = self._read_sets(
                    session, zone_name, [c.key for c in already], {c.key: c.type for c in already}
                )
                held = {c.key for c in already if c.holds(current[c.key])}
                pending = [c for c in pinned if c.key not in held]
            batches = [pending[i : i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
            messages: dict[int, dns.update.UpdateMessage] = {}

            def prepare(i: int) -> None:
                # Message i is built while the server works on message i-1: building takes about
                # as long as BIND takes to apply one, so the server's time is hidden.
                if i < len(batches) and i not in messages:
                    messages[i] = update_message(zone_name, batches[i], key)

            failures: list[AgentError] = []
            stop: AgentError | None = None
            for index, batch in enumerate(batches, start=1):
                fields = dict(ctx, batch=index, batches=len(batches), records=[c.label for c in batch])
                if stop is not None:
                    failures.append(
                        type(stop)(
                            f"update {index} of {len(batches)} for zone {zone_text} was not sent: "
                            f"an earlier one failed with {stop.code} ({stop.message})",
                            attempted=False,
                            **fields,
                        )
                    )
                    continue
                prepare(index - 1)
                err = self._apply_batch(
                    session, zone_name, batch, key, fields, messages.pop(index - 1), functools.partial(prepare, index)
                )
                if err is not None:
                    failures.append(err)
                    if isinstance(err, (TimeoutError_, UnreachableError)):
                        stop = err
        finally:
            session.close()
        log.info(
            "dns.apply",
            zone=zone_text,
            server=self.name,
            changes=len(pinned),
            held_before=len(pinned) - len(pending),
            messages=len(batches),
            failed=len(failures),
        )
        if not failures:
            return
        if len(batches) == 1:
            raise failures[0]
        raise DnsBatchError(
            f"{len(failures)} of {len(batches)} updates for zone {zone_text} on DNS server {self.name} failed "
            f"({', '.join(sorted({f.code for f in failures}))}); the other {len(batches) - len(failures)} "
            "were applied and stay applied: re-read before deciding",
            failures=failures,
            applied_batches=len(batches) - len(failures),
            **dict(ctx, batches=len(batches)),
        )

    def _apply_batch(
        self,
        session: DnsSession,
        zone: dns.name.Name,
        batch: list[Pinned],
        key: dns.tsig.Key,
        fields: dict[str, Any],
        message: dns.update.UpdateMessage,
        meanwhile: Callable[[], None],
    ) -> AgentError | None:
        """Send one batch (``message``, built from it); on a prerequisite refusal, read back, drop
        what already holds, report conflicts, and send the rest once more. ``meanwhile`` runs
        while the first send is in flight. Returns the batch's error, or None."""
        pending = batch
        for attempt in (1, 2):
            if attempt == 2:
                message = update_message(zone, pending, key)
            err = self._send(session, message, len(pending), fields, meanwhile if attempt == 1 else None)
            if not isinstance(err, DnsPrerequisiteFailed):
                return err
            try:
                current = self._read_sets(session, zone, [c.key for c in pending], {c.key: c.type for c in pending})
            except AgentError as read_err:
                err.fields["read_back"] = f"failed: {read_err.code}"
                return err
            conflicts = [c for c in pending if not c.holds(current[c.key]) and not c.expected_holds(current[c.key])]
            remaining = [c for c in pending if not c.holds(current[c.key])]
            if conflicts or (remaining and attempt == 2):
                # A second refusal without a visible conflict: the RRset changed and changed back
                # between the refusal and the read. Report it rather than chase it.
                found = conflicts or remaining
                details = [conflict(c, current[c.key]) for c in found]
                now = ", ".join(f"{d['record']} now {d['found'] or 'absent'}" for d in details)
                log.warning("dns.conflict", zone=fields["zone"], server=self.name, conflicts=details)
                return DnsPrerequisiteFailed(
                    f"DNS server {self.name} refused update {fields['batch']} of {fields['batches']} for zone "
                    f"{fields['zone']}: {len(found)} record set(s) changed since they were read ({now}); "
                    "nothing in this update was applied",
                    conflicts=details,
                    **dict(fields, rcode=err.fields.get("rcode")),
                )
            if not remaining:
                return None  # everything in it was already in place (a retry of an applied update)
            pending = remaining
        return None  # unreachable: attempt 2 always returns above

    def _send(
        self,
        session: DnsSession,
        message: dns.update.UpdateMessage,
        count: int,
        fields: dict[str, Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> AgentError | None:
        what = f"update {fields['batch']} of {fields['batches']} for zone {fields['zone']} ({count} record sets)"
        for fresh in (False, True):
            if self._gss is not None:
                # Signed at send time with the context valid now: an apply may outlive a context,
                # and a message built ahead was signed with none in particular.
                if fresh:
                    self._gss.forget()
                try:
                    key = self._gss.key()
                except AgentError as failed:
                    return failed
                message.use_tsig(key, keyname=key.name, algorithm=key.algorithm)
            try:
                session.send(message)
                if meanwhile is not None:
                    meanwhile()
                    meanwhile = None
                reply = session.receive(message)
            except Exception as exc:
                err = error_for_exception(exc, what=what, **fields)
                if err is None:
                    raise
                err.__cause__ = exc
                if isinstance(err, DnsBadKey) and self._gss is not None and not fresh:
                    # The server forgot the context (restart without its key file, expiry): once more.
                    log.info("dns.gss_renegotiate", server=self.name, zone=fields["zone"], reason=err.code)
                    continue
                return err
            log.debug("dns.update", zone=fields["zone"], server=self.name, batch=fields["batch"], rcode=reply.rcode())
            return error_for_rcode(reply.rcode(), what=what, **fields)
        return None  # unreachable: the second pass always returns

    # ---------------------------------------------------------------- helpers

    def _signing_key(self) -> dns.tsig.Key:
        """The key for this call only. The TSIG secret is revealed here and nowhere else; a
        GSS-TSIG context is the signer's, negotiated when it has none that is still valid."""
        if self._gss is not None:
            return self._gss.key()
        assert self._tsig is not None
        try:
            return dns.tsig.Key(self._tsig.name, self._tsig.secret.reveal(), _ALGORITHMS[self._tsig.algorithm])
        except (binascii.Error, ValueError):
            # from None: the decoder's message must not get a chance to quote the input.
            raise DnsBadKey(
                f"the TSIG secret of key {self._tsig.name!r} ({self._tsig.secret.ref}) is not valid base64",
                **self._fields,
            ) from None

    def _query(
        self, session: DnsSession, questions: Sequence[Question], *, what: str, **fields: Any
    ) -> list[dns.message.Message]:
        try:
            return session.query_many(questions)
        except Exception as exc:
            err = error_for_exception(exc, what=what, **fields)
            if err is None:
                raise
            raise err from exc

    def _read_sets(
        self,
        session: DnsSession,
        zone: dns.name.Name,
        keys: Sequence[tuple[dns.name.Name, dns.rdatatype.RdataType]],
        types: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], RecordType],
    ) -> dict[tuple[dns.name.Name, dns.rdatatype.RdataType], RecordSet | None]:
        zone_text = zone.to_text()
        fields = dict(self._fields, zone=zone_text)
        replies = self._query(session, keys, what=f"the read of {len(keys)} record sets in zone {zone_text}", **fields)
        found: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], RecordSet | None] = {}
        for (name, rdtype), reply in zip(keys, replies, strict=True):
            label = record_label(name.to_text(), types[(name, rdtype)])
            rcode = reply.rcode()
            if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                err = error_for_rcode(rcode, what=f"the query for {label}", record=label, **fields)
                assert err is not None
                raise err
            if not reply.flags & dns.flags.AA:
                # Data without authority may come from a cache: useless for pinning a change.
                raise DnsNotAuthoritative(
                    f"DNS server {self.name} ({self._fields['address']}) answered the query for {label} "
                    "without authority: it does not serve this zone",
                    record=label,
                    **fields,
                )
            rrset = reply.get_rrset(reply.answer, name, dns.rdataclass.IN, rdtype)
            found[(name, rdtype)] = (
                None
                if rrset is None or len(rrset) == 0
                else RecordSet(
                    zone=zone_text,
                    name=name.to_text(),
                    type=types[(name, rdtype)],
                    ttl=rrset.ttl,
                    values=tuple(sorted({canonical_rdata(rd) for rd in rrset})),
                )
            )
        return found

    def _zone_name(self, zone: str) -> dns.name.Name:
        try:
            return to_dns_name(zone)
        except ValueError as exc:
            raise DnsInvalidRequest(str(exc), **self._fields) from exc

    def _dns_name(self, name: str) -> dns.name.Name:
        try:
            return to_dns_name(name)
        except ValueError as exc:
            raise DnsInvalidRequest(str(exc), **self._fields) from exc

    def probe(self, zone: str) -> str:
        """Preflight: :func:`agent.dns.verify.signed_soa` of ``zone``, with the key updates use."""
        return signed_soa(self._session_factory, self._zone_name(zone), self._signing_key(), self._fields)
