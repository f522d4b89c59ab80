"""DNS server auth in the config: Kerberos (gss_tsig) as the alternative to a shared TSIG key,
checked at load with located errors, and refused by name until its driver lands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.configfile import load_config
from agent.wiring import check_available
from agent.yamlfile import InvalidFileError
from tests.rigs import copy_demo

pytestmark = pytest.mark.usefixtures("cli_env")

TSIG = {"name": "failover-agent.", "secret": "env:FAILOVER_AGENT_TSIG_SECRET"}
GSS = {"principal": "failover-agent@CONTOSO.EXAMPLE", "keytab": "env:FAILOVER_AGENT_KEYTAB"}


def _config(tmp_path: Path, **server: Any) -> Path:
    def edit(data: dict[str, Any]) -> None:
        data["dns"]["servers"][0] = {"name": "dns-contoso", "kind": "rfc2136", "address": "127.0.0.1", **server}

    return copy_demo(tmp_path, edit=edit)


def _problems(path: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(InvalidFileError) as caught:
        load_config(path)
    return [(p.key, p.line, p.message) for p in caught.value.problems]


def test_an_rfc2136_server_takes_a_kerberos_principal_with_a_keytab_or_a_credential_cache(tmp_path: Path) -> None:
    for source in ({"keytab": "env:KT"}, {"ccache": "env:KRB5CCNAME"}):
        gss = {"principal": "failover-agent@CONTOSO.EXAMPLE", **source}
        loaded = load_config(_config(tmp_path / next(iter(source)), gss_tsig=gss))
        server = loaded.config.dns.servers[0]
        assert server.gss_tsig is not None and server.tsig is None
        assert server.gss_tsig.principal == "failover-agent@CONTOSO.EXAMPLE"


@pytest.mark.parametrize(("server", "key", "says"), [
    ({}, "dns.servers[0]", "exactly one of tsig (shared key) or gss_tsig"),
    ({"tsig": TSIG, "gss_tsig": GSS}, "dns.servers[0]", "exactly one of tsig (shared key) or gss_tsig"),
    ({"gss_tsig": {"principal": GSS["principal"]}}, "dns.servers[0].gss_tsig", "exactly one of keytab or ccache"),
    ({"gss_tsig": {**GSS, "ccache": "env:KRB5CCNAME"}}, "dns.servers[0].gss_tsig", "exactly one of keytab or ccache"),
    ({"gss_tsig": {**GSS, "principal": "failover-agent"}}, "dns.servers[0].gss_tsig.principal", "'name@REALM'"),
    ({"gss_tsig": {**GSS, "keytab": "/etc/krb5.keytab"}}, "dns.servers[0].gss_tsig.keytab", "'env:VARIABLE'"),
])
def test_bad_dns_auth_is_refused_at_load_naming_the_entry(tmp_path: Path, server: dict[str, Any], key: str,
                                                          says: str) -> None:
    problems = _problems(_config(tmp_path, **server))
    assert any(k.startswith(key) and line and says in message for k, line, message in problems), problems


def test_gss_tsig_is_no_longer_refused_now_that_the_driver_signs_with_kerberos(tmp_path: Path) -> None:
    check_available(load_config(_config(tmp_path, gss_tsig=GSS)))  # raises NotAvailableYet when refused


def test_the_site_template_tells_that_ad_integrated_zones_need_kerberos_not_a_shared_key() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "site-template.yaml").read_text()
    assert "secure updates over TSIG" not in text
    assert "AD-integrated" in text and "gss_tsig" in text
