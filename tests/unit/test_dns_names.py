"""Canonical DNS names and values, and PTR names (pure, no server)."""

from __future__ import annotations

import dns.reversename
import pytest

from agent.dns.names import canonical_name, canonical_value, canonical_values, record_label, reverse_name
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
