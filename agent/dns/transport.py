"""DNS over one TCP connection: signed updates one at a time, plain queries pipelined.

This is the only place the DNS code touches sockets; the RFC 2136 driver and the verifier talk
to a :class:`DnsSession` so tests can replace it. dnspython does all the DNS work (message
encoding, TSIG signing and verification, the two-byte TCP length framing of RFC 1035 4.2.2);
this module only decides when to connect and how many queries are in flight.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Protocol

import dns.entropy
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype

Question = tuple[dns.name.Name, dns.rdatatype.RdataType]


class DnsSession(Protocol):
    """The I/O seam of the DNS code: one server, one connection at a time."""

    def send(self, message: dns.message.Message) -> None:
        """Send one message (typically a TSIG-signed update); its reply is read by :meth:`receive`.
        One message at a time: the caller may work between the two calls, not send another."""
        ...

    def receive(self, message: dns.message.Message) -> dns.message.Message:
        """The reply to ``message``, checked to answer it and, when it was signed, TSIG-verified."""
        ...

    def query_many(self, questions: Sequence[Question], *, recursion: bool = False) -> list[dns.message.Message]:
        """Ask each question (class IN); replies in the order of ``questions``."""
        ...

    def close(self) -> None: ...


class TcpSession:
    """One TCP connection to ``host:port``, opened on first use.

    After any failure the connection is dropped and the next call opens a new one, so a server
    restart between two calls costs one failed call, not the session. ``timeout`` bounds each
    update from its send to its reply, and each window of pipelined queries.

    Queries are pipelined (RFC 7766 section 6.2.1.1: a server may answer out of order, so
    replies are matched to queries by ID and question): ``window`` of them are written before
    the replies are read. The window keeps both directions' socket buffers far from full (128
    queries are ~6 KB, their replies ~15 KB), so neither side can block the other.
    """

    def __init__(self, host: str, port: int, timeout: float, *, window: int = 128) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.window = window
        self._sock: socket.socket | None = None
        self._expiration = 0.0

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            # dnspython's send/receive enforce their expiration only on non-blocking sockets.
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def send(self, message: dns.message.Message) -> None:
        try:
            sock = self._connected()
            self._expiration = time.time() + self.timeout
            # to_wire signs the message when it carries a key, and records its MAC on it.
            dns.query.send_tcp(sock, message.to_wire(), self._expiration)
        except BaseException:
            self._drop()
            raise

    def receive(self, message: dns.message.Message) -> dns.message.Message:
        # The same checks dns.query.tcp makes: TSIG verified against the request's MAC (a
        # signed request needs a signed reply), and the reply must answer this very request.
        try:
            if self._sock is None:
                raise EOFError("no connection: nothing was sent on it")
            reply, _received = dns.query.receive_tcp(
                self._sock, self._expiration, keyring=message.keyring, request_mac=message.mac
            )
            if not message.is_response(reply):
                raise dns.query.BadResponse("the reply does not answer the update sent")
            return reply
        except BaseException:
            self._drop()
            raise

    def query_many(self, questions: Sequence[Question], *, recursion: bool = False) -> list[dns.message.Message]:
        flags = dns.flags.RD if recursion else 0
        replies: list[dns.message.Message] = []
        try:
            sock = self._connected()
            for start in range(0, len(questions), self.window):
                chunk = questions[start : start + self.window]
                queries = [dns.message.make_query(name, rdtype, flags=flags) for name, rdtype in chunk]
                by_id: dict[int, int] = {}
                for i, q in enumerate(queries):
                    while q.id in by_id:  # IDs must be unique among the queries in flight
                        q.id = dns.entropy.random_16()
                    by_id[q.id] = i
                expiration = time.time() + self.timeout
                for q in queries:
                    dns.query.send_tcp(sock, q, expiration)
                got: list[dns.message.Message | None] = [None] * len(queries)
                for _ in queries:
                    reply, _received = dns.query.receive_tcp(sock, expiration)
                    i = by_id.get(reply.id, -1)
                    if i < 0 or got[i] is not None or not queries[i].is_response(reply):
                        raise dns.query.BadResponse("a reply matches no query in flight")
                    got[i] = reply
                replies.extend(r for r in got if r is not None)
        except BaseException:
            self._drop()
            raise
        return replies

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> TcpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
