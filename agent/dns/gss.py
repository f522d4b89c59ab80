"""GSS-TSIG (RFC 3645): Kerberos-signed DNS messages, what AD-integrated zones accept.

A :class:`GssSigner` negotiates a security context with the server in a TKEY exchange (RFC 3645
section 4: the TKEY query is unsigned, the server's reply carries its token and is itself
signed with the new context) and hands it out as a ``dns.tsig.Key`` whose secret is the context,
so the update messages sign exactly as with an HMAC key. The context is kept until shortly
before the key the server granted expires (BIND grants 3600 s) or the ticket does; a server that
has forgotten it answers BADKEY/BADSIG, and the driver calls :meth:`GssSigner.forget` and signs
again with a fresh one.

Credentials come from the keytab or ccache whose *path* the configured ``env:`` reference
holds; a keytab's tickets go to a per-signer in-memory ccache, so nothing is written to disk and
no ``kinit`` is needed. ``gssapi`` is imported only here, when a signer is made: installations
without Kerberos never load it (the ``kerberos`` extra installs it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TKEY
import dns.tsig
import structlog

from agent.config import GssTsig
from agent.dns.errors import error_for_exception, error_for_rcode
from agent.dns.transport import DnsSession
from agent.domain.errors import DnsBadKey, DnsBadTime, DnsRefused

log = structlog.get_logger(__name__)

_SPNEGO = "1.3.6.1.5.5.2"  # what Windows clients and nsupdate -g negotiate
_MARGIN_S = 300.0  # renegotiate this long before the granted key or the ticket runs out
_ASKED_S = 86400  # TKEY lifetime asked for; the server grants what it wants (BIND: 3600 s)


def _now() -> float:
    """The clock context lifetimes count on (a seam: tests move it past an expiry)."""
    return time.monotonic()


def _gssapi() -> ModuleType:
    import gssapi  # lazy on purpose: only GSS-TSIG servers need Kerberos

    return gssapi


class GssSigner:
    """The GSS-TSIG context for one server and one principal, negotiated on first use."""

    def __init__(self, config: GssTsig, server_host: str, session_factory: Callable[[], DnsSession],
                 fields: dict[str, Any]) -> None:
        self.principal = config.principal
        realm = config.principal.rsplit("@", 1)[1]
        self.server_principal = config.server_principal or f"DNS/{server_host}@{realm}"
        self._config = config
        self._session_factory = session_factory
        self._fields = dict(fields, principal=self.principal, server_principal=self.server_principal)
        self._where = f"DNS server {fields.get('server')} ({fields.get('address')})"
        try:
            self._gss = _gssapi()
        except ImportError:
            raise DnsBadKey(
                f"{self._where} is configured for GSS-TSIG (Kerberos, principal {self.principal}) but the Python "
                "package gssapi is not installed: install failover-agent[kerberos]",
                **self._fields,
            ) from None
        self._key: dns.tsig.Key | None = None
        self._until = 0.0

    def __repr__(self) -> str:
        return f"GssSigner(principal={self.principal!r}, server_principal={self.server_principal!r})"

    def key(self) -> dns.tsig.Key:
        """The current context as a signing key; negotiated when there is none or it is about to
        expire."""
        if self._key is None or _now() >= self._until:
            self._key = None
            self._key, self._until = self._negotiate()
        return self._key

    def forget(self) -> None:
        """The server rejected the context (BADKEY/BADSIG): the next :meth:`key` negotiates anew."""
        self._key = None

    # ----------------------------------------------------------------- negotiation

    def _path(self, ref: str) -> str:
        var = ref.removeprefix("env:")
        path = os.environ.get(var)
        if not path:
            raise DnsBadKey(
                f"{self._where}: the Kerberos {'keytab' if ref == self._config.keytab else 'ccache'} of principal "
                f"{self.principal} is {ref}, and the environment variable {var} is not set",
                **self._fields,
            )
        return path

    def _credentials(self) -> Any:
        gss = self._gss
        if self._config.keytab is not None:
            store = {"client_keytab": self._path(self._config.keytab), "ccache": f"MEMORY:agent-{uuid.uuid4()}"}
        else:
            assert self._config.ccache is not None
            store = {"ccache": self._path(self._config.ccache)}
        name = gss.Name(self.principal, gss.NameType.kerberos_principal)
        return gss.Credentials(name=name, usage="initiate", store=store)

    def _failed(self, exc: Exception) -> DnsBadKey | DnsBadTime:
        text = str(exc)
        about = (f"{self._where}: Kerberos for principal {self.principal} towards {self.server_principal} failed")
        lowered = text.lower()
        if "skew" in lowered:
            return DnsBadTime(f"{about}: the clocks of the agent and the KDC differ too much ({text})", **self._fields)
        if "not found in kerberos database" in lowered:
            hint = "the KDC knows no such service principal: set gss_tsig.server_principal to the server's SPN"
        elif "no credentials" in lowered or "keytab" in lowered or "ccache" in lowered or "cache" in lowered:
            hint = "no ticket: the keytab or ccache holds no usable key for this principal"
        elif "kdc" in lowered:
            hint = "the KDC could not be reached"
        else:
            hint = "the KDC or the server refused"
        return DnsBadKey(f"{about}: {hint} ({text})", **self._fields)

    def _negotiate(self) -> tuple[dns.tsig.Key, float]:
        gss = self._gss
        keyname = dns.name.from_text(f"{uuid.uuid4()}.sig-agent.")
        try:
            ctx = gss.SecurityContext(
                name=gss.Name(self.server_principal, gss.NameType.kerberos_principal),
                creds=self._credentials(), usage="initiate", mech=gss.OID.from_int_seq(_SPNEGO),
                flags=[gss.RequirementFlag.mutual_authentication, gss.RequirementFlag.replay_detection,
                       gss.RequirementFlag.integrity])
            token = ctx.step()
        except gss.exceptions.GSSError as exc:
            raise self._failed(exc) from exc
        key = dns.tsig.Key(keyname, ctx, dns.tsig.GSS_TSIG)
        # The adapter steps the context with the token of the (signed) reply, then verifies it.
        keyring = dns.tsig.GSSTSigAdapter({keyname: key})
        what = f"the GSS-TSIG key negotiation (TKEY) as {self.principal}"
        granted = float(_ASKED_S)
        session = self._session_factory()
        try:
            while not ctx.complete:
                if token is None:
                    raise DnsBadKey(f"{self._where} ended {what} before the context completed", **self._fields)
                now = int(time.time())
                tkey = dns.rdtypes.ANY.TKEY.TKEY(
                    dns.rdataclass.ANY, dns.rdatatype.TKEY, dns.tsig.GSS_TSIG, now, now + _ASKED_S,
                    dns.rdtypes.ANY.TKEY.TKEY.GSSAPI_NEGOTIATION, 0, token)
                query = dns.message.make_query(keyname, dns.rdatatype.TKEY, dns.rdataclass.ANY)
                query.find_rrset(query.additional, keyname, dns.rdataclass.ANY, dns.rdatatype.TKEY,
                                 create=True).add(tkey)
                query.keyring = keyring
                try:
                    session.send(query)
                    reply = session.receive(query)
                except gss.exceptions.GSSError as exc:
                    raise self._failed(exc) from exc
                except Exception as exc:
                    err = error_for_exception(exc, what=what, **self._fields)
                    if err is None:
                        raise
                    raise err from exc
                if reply.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTIMP):
                    rcode = dns.rcode.to_text(reply.rcode())
                    raise DnsRefused(
                        f"{self._where} refused {what} ({rcode}): it does not take Kerberos-signed updates, or not "
                        f"for service principal {self.server_principal}", rcode=rcode, **self._fields)
                rcode_err = error_for_rcode(reply.rcode(), what=what, **self._fields)
                if rcode_err is not None:
                    raise rcode_err
                answer = reply.get_rrset(reply.answer, keyname, dns.rdataclass.ANY, dns.rdatatype.TKEY)
                if answer is None or len(answer) == 0:
                    raise DnsBadKey(f"{self._where} answered {what} without a TKEY record", **self._fields)
                tkey_answer = answer[0]
                if tkey_answer.error:
                    raise DnsBadKey(
                        f"{self._where} refused {what} ({dns.rcode.to_text(tkey_answer.error)}): the server does not "
                        f"accept principal {self.principal} or its service principal is not {self.server_principal}",
                        **self._fields)
                granted = float(tkey_answer.expiration - tkey_answer.inception)
                token = None  # Kerberos with mutual authentication completes in one round trip
        finally:
            session.close()
        lifetime = min(granted, float(ctx.lifetime or granted))
        log.info("dns.gss_negotiated", server=self._fields.get("server"), principal=self.principal,
                 server_principal=self.server_principal, key_name=keyname.to_text(), lifetime_s=lifetime)
        return key, _now() + max(lifetime - min(_MARGIN_S, lifetime / 10), 0.0)
