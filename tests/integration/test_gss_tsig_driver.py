"""The GSS-TSIG driver without a server: gssapi stays unloaded until a gss_tsig server is built,
and its absence is a clear error naming the server, the principal and the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agent.dns.gss
from agent.config import DnsServer
from agent.domain.errors import DnsBadKey
from agent.drivers.rfc2136 import Rfc2136Dns
from tests.kdc import require_gssapi

SERVER = {"name": "dns-ad", "kind": "rfc2136", "address": "127.0.0.1", "port": 53,
          "gss_tsig": {"principal": "agent@TEST.EXAMPLE", "keytab": "env:KT_AGENT"}}


def test_gssapi_is_not_loaded_by_the_driver_module_nor_by_a_shared_key_server() -> None:
    code = ("import sys; from agent.config import DnsServer; from agent.drivers.rfc2136 import Rfc2136Dns; "
            "Rfc2136Dns(DnsServer.model_validate({'name': 'b', 'kind': 'rfc2136', 'address': '127.0.0.1', "
            "'tsig': {'name': 'k', 'secret': 'env:X'}})); print('gssapi' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_gssapi_a_gss_server_is_refused_naming_server_principal_and_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'gssapi'")

    monkeypatch.setattr(agent.dns.gss, "_gssapi", missing)
    with pytest.raises(DnsBadKey) as caught:
        Rfc2136Dns(DnsServer.model_validate(SERVER))
    message = caught.value.message
    assert "dns-ad" in message and "agent@TEST.EXAMPLE" in message and "failover-agent[kerberos]" in message


def test_the_default_service_principal_is_dns_at_the_server_address_in_the_principals_realm() -> None:
    require_gssapi()
    text = repr(Rfc2136Dns(DnsServer.model_validate(dict(SERVER, address="dc1.corp.example"))))
    assert "server_principal='DNS/dc1.corp.example@TEST.EXAMPLE'" in text
    assert "gss_principal='agent@TEST.EXAMPLE'" in text and "gss-tsig" in text
