"""The throwaway KDC of tests/kdc.py issues real tickets: the ground the GSS-TSIG tests stand on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kdc import Kdc, require_gssapi


@pytest.fixture
def kdc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kdc]:
    kdc = Kdc(tmp_path / "krb")
    for name, value in kdc.environ().items():
        monkeypatch.setenv(name, value)  # before the first gssapi call reads the krb5 config
    kdc.start()
    yield kdc
    kdc.stop()


def test_a_keytab_principal_gets_a_service_ticket_for_dns_and_an_unknown_service_none(kdc: Kdc) -> None:
    gssapi = require_gssapi()
    kdc.principal("DNS/localhost")
    keytab = kdc.principal("agent")
    creds = gssapi.Credentials(name=gssapi.Name(f"agent@{kdc.realm}", gssapi.NameType.kerberos_principal),
                               usage="initiate", store={"client_keytab": str(keytab), "ccache": "MEMORY:kdc-test"})
    ctx = gssapi.SecurityContext(name=gssapi.Name("DNS@localhost", gssapi.NameType.hostbased_service),
                                 creds=creds, usage="initiate")
    assert ctx.step(), "an AP-REQ token: the KDC issued a ticket for DNS/localhost"
    unknown = gssapi.Name("DNS@nosuchhost.test.example", gssapi.NameType.hostbased_service)
    stranger = gssapi.SecurityContext(name=unknown, creds=creds, usage="initiate")
    with pytest.raises(gssapi.exceptions.GSSError, match="not found in Kerberos database"):
        stranger.step()
