"""The wire-level PSRP/WinRS test server (:mod:`tests.psrpserver.server`) and its fixtures.

Name resolution: endpoints are named ``<name>.sim.test``; :func:`sim_test_resolves_to_loopback`
wraps ``socket.getaddrinfo`` for the test process so those names (and only those) resolve to
127.0.0.1. Nothing in the agent is patched: the transport connects by name as it would in
production, requests sends ``Host: <name>.sim.test:<port>`` (the server routes on it), and HTTPS
checks the certificate against that name.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import leakcheck
from tests.psrpserver.server import PsrpTestServer, Received

__all__ = ["PsrpTestServer", "Received", "TestCa", "make_ca", "serving", "sim_test_resolves_to_loopback"]

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str) and host.lower().endswith(".sim.test"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


def sim_test_resolves_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.sim.test`` resolves to 127.0.0.1 in this test (undone with ``monkeypatch``)."""
    monkeypatch.setattr(socket, "getaddrinfo", _getaddrinfo)


@dataclass
class TestCa:
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    """A client certificate (CN ``agent-client``) and its key, for mutual TLS."""
    client_key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_ca(directory: Path, name: str = "test") -> TestCa:
    """A fresh CA, a server certificate for ``*.sim.test`` and 127.0.0.1, and a client
    certificate, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "*.sim.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.sim.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-client")]))
              .issuer_name(ca_name).public_key(client_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    found = TestCa(directory / f"{name}-ca.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key",
                   directory / f"{name}-client.pem", directory / f"{name}-client.key")
    found.client_cert_file.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    found.client_key_file.write_bytes(client_key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    found.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return found


@contextlib.contextmanager
def serving(monkeypatch: pytest.MonkeyPatch, *, tls: ssl.SSLContext | None = None, auth: str = "basic",
            users_file: Path | None = None) -> Iterator[PsrpTestServer]:
    """The test server on 127.0.0.1 at a free port, in a thread, with ``auth`` (basic, or ntlm
    with ``users_file`` to write the NTLM account to; user ``agent``, password in
    ``$FA_SIM_PASSWORD``) and ``*.sim.test`` resolving to it."""
    sim_test_resolves_to_loopback(monkeypatch)
    monkeypatch.setenv("FA_SIM_PASSWORD", "s3cret")
    if auth == "ntlm":
        assert users_file is not None, "NTLM needs a users file (pyspnego's NTLM acceptor reads NTLM_USER_FILE)"
        users_file.write_text(":agent:s3cret\n", encoding="utf-8")
        monkeypatch.setenv("NTLM_USER_FILE", str(users_file))
    server = PsrpTestServer(password=leakcheck.remember("s3cret"), tls=tls, auth=auth).start()
    try:
        yield server
    finally:
        server.stop()
