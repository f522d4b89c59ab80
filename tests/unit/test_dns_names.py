"""Canonical DNS names and values, and PTR names (pure, no server)."""

from __future__ import annotations

import re

import dns.reversename
import pytest

from agent.dns.names import (
    HostNameError,
    canonical_name,
    canonical_value,
    canonical_values,
    configured_host_name,
    derive_host_label,
    derive_host_name,
    record_label,
    reverse_name,
)
from agent.domain.model import RecordType


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("192.0.2.10", "10.2.0.192.in-addr.arpa."),
        (" 198.51.100.1 ", "1.100.51.198.in-addr.arpa."),
        ("2001:db8::1", "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.ip6.arpa."),
        ("2001:DB8:0:0:0:0:0:1", "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.ip6.arpa."),
    ],
)
def test_reverse_name(address, name):
    assert reverse_name(address) == name
    assert len(reverse_name("2001:db8::1").split(".")) == 32 + 3  # 32 nibbles, ip6, arpa, root


def test_reverse_name_is_dnspythons():
    assert reverse_name("2001:db8::abcd") == dns.reversename.from_address("2001:db8::abcd").to_text()


@pytest.mark.parametrize("bad", ["192.0.2.300", "host1", "", "2001:db8::1::2"])
def test_reverse_name_refuses_what_is_not_an_address(bad):
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        reverse_name(bad)


def test_canonical_name_is_absolute_and_lower_case():
    assert canonical_name("Host1.Example.TEST") == "host1.example.test."
    assert canonical_name("host1.example.test.") == "host1.example.test."
    with pytest.raises(ValueError):
        canonical_name("a..b")


@pytest.mark.parametrize(
    ("rtype", "value", "canonical"),
    [
        (RecordType.A, " 192.0.2.1", "192.0.2.1"),
        (RecordType.AAAA, "2001:DB8:0000:0::1", "2001:db8::1"),
        (RecordType.AAAA, "::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        (RecordType.PTR, "Web.Example.Test", "web.example.test."),
        (RecordType.PTR, "web.example.test.", "web.example.test."),
    ],
)
def test_canonical_value(rtype, value, canonical):
    assert canonical_value(rtype, value) == canonical


@pytest.mark.parametrize(
    ("rtype", "value"), [(RecordType.A, "192.0.2.01"), (RecordType.A, "2001:db8::1"), (RecordType.AAAA, "192.0.2.1")]
)
def test_canonical_value_refuses_a_value_of_another_type(rtype, value):
    with pytest.raises(ValueError, match=f"not a valid {rtype}"):
        canonical_value(rtype, value)


def test_canonical_values_are_sorted_and_unique():
    assert canonical_values(RecordType.AAAA, ["2001:db8::2", "2001:DB8::1", "2001:db8:0::2"]) == (
        "2001:db8::1",
        "2001:db8::2",
    )


def test_record_label():
    assert record_label("host1.example.test.", RecordType.A) == "host1.example.test. A"


# ------------------------------------------------------------------- host names of VMs


@pytest.mark.parametrize(("vm", "label"), [
    ("o'brien", "obrien"),                 # other characters dropped
    ("web 01", "web-01"),                  # spaces ...
    ("Web_01", "web-01"),                  # ... and underscores become hyphens, lower case
    ("web - 01", "web-01"),                # one hyphen for a run
    ("-db-", "db"),                        # none at the ends
    ("sql01.corp", "sql01.corp"),          # dots separate labels
    ("Müller", "xn--mller-kva"),           # IDNA
    ("Mu\u0308ller", "xn--mller-kva"),     # NFC first: the same name as above
    ("\x1b[2Jweb\u202e", "2jweb"),         # control and format characters are not letters
    ("a" * 63, "a" * 63),
])
def test_a_vm_name_gives_its_dns_label_by_the_documented_rule(vm: str, label: str) -> None:
    assert derive_host_label(vm) == label
    assert derive_host_name(vm, "corp.example") == f"{label}.corp.example."


@pytest.mark.parametrize(("vm", "why"), [
    ("!!!", "leaves no letters or digits"),
    ("web..01", "in its part ''"),
    ("a" * 64, "64 characters, over the 63"),
    ("münchen" * 9, "has no IDNA form"),
    ("\u2474", "is not letters, digits and hyphens"),  # NFKC: (1)
])
def test_a_vm_name_that_gives_no_label_says_why(vm: str, why: str) -> None:
    with pytest.raises(HostNameError, match=re.escape(why)):
        derive_host_label(vm)


def test_a_derived_name_over_253_characters_is_refused() -> None:
    domain = ".".join(["c" * 63] * 3)  # 191 characters
    assert len(derive_host_name("b" * 61, domain)) == 253 + 1  # the most DNS takes, and the root dot
    with pytest.raises(HostNameError, match="254 characters, over the 253"):
        derive_host_name("b" * 62, domain)


@pytest.mark.parametrize(("text", "name"), [
    ("App-One.DR.corp.example", "app-one.dr.corp.example."),
    ("münchen.example.", "xn--mnchen-3ya.example."),
    (" x.example ", "x.example."),
])
def test_a_configured_host_name_is_kept_as_written_in_canonical_form(text: str, name: str) -> None:
    assert configured_host_name(text) == name


@pytest.mark.parametrize("text", ["", ".", "a..b", "bad name.x", "-a.b", "a-.b", "a_b.c", "*.x", "a\\046b.c",
                                  "a" * 64 + ".x", ".".join(["b" * 60] * 5), "münchen" * 9 + ".x"])
def test_a_configured_host_name_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(HostNameError):
        configured_host_name(text)
