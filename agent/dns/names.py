"""Canonical text for DNS names and record values, and PTR names for addresses.

Pure functions on dnspython's parsers: no I/O. Every DNS driver and the verifier compare record
sets through these, so ``"2001:DB8:0::1"`` and ``"2001:db8::1"``, or ``"Host1.Example.Test"`` and
``"host1.example.test."``, are the same value everywhere.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from agent.domain.model import RecordType

_ADDRESS_TYPES: dict[str, type[dns.rdtypes.IN.A.A] | type[dns.rdtypes.IN.AAAA.AAAA]] = {
    "A": dns.rdtypes.IN.A.A,
    "AAAA": dns.rdtypes.IN.AAAA.AAAA,
}


def canonical_name(name: str | dns.name.Name) -> str:
    """Fully qualified, lower case, trailing dot: ``"Host1.Example.Test"`` -> ``"host1.example.test."``.

    A name without a trailing dot is taken as fully qualified (relative to the root), never
    relative to some zone: the agent always writes whole names.
    """
    return to_dns_name(name).to_text()


def to_dns_name(name: str | dns.name.Name) -> dns.name.Name:
    """The lower-cased absolute :class:`dns.name.Name` of ``name``; ``ValueError`` if malformed."""
    if isinstance(name, dns.name.Name):
        parsed = name if name.is_absolute() else name.concatenate(dns.name.root)
    else:
        text = name.strip()
        try:
            if "\\" not in text:  # no escapes: lower-casing the text is canonicalising it
                return dns.name.from_text(text.lower(), origin=dns.name.root)
            parsed = dns.name.from_text(text, origin=dns.name.root)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{name!r} is not a valid DNS name: {exc}") from exc
    return parsed.canonicalize()


def parse_value(rtype: RecordType | str, value: str) -> dns.rdata.Rdata:
    """``value`` as dnspython rdata of ``rtype``; ``ValueError`` if it is not one.

    PTR targets without a trailing dot are fully qualified (origin = root), like record names.
    """
    return parse_canonical(rtype, value)[1]


def parse_canonical(rtype: RecordType | str, value: str) -> tuple[str, dns.rdata.Rdata]:
    """``value``'s canonical text (see :func:`canonical_rdata`) and rdata in that form: what a
    driver compares, and what it sends."""
    rtype = str(rtype)
    text = value.strip()
    if rtype in _ADDRESS_TYPES:
        # Addresses go straight to dnspython's A/AAAA constructors, which are strict (no leading
        # zeros, no IPv4 in an AAAA) and store the canonical text; skipping its text tokenizer
        # halves the cost of a change in a 1,000-change apply.
        try:
            address = _ADDRESS_TYPES[rtype](dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{value!r} is not a valid {rtype} value") from exc
        return address.address, address
    try:
        # relativize=False: else dnspython stores the target relative to the origin, and a
        # message would append its zone to it.
        rd = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text, origin=dns.name.root, relativize=False
        )
    except dns.exception.DNSException as exc:
        raise ValueError(f"{value!r} is not a valid {rtype} value") from exc
    target = getattr(rd, "target", None)
    if isinstance(target, dns.name.Name):  # PTR (and any name-valued type): lower case
        rd = rd.replace(target=target.canonicalize())
    return canonical_rdata(rd), rd


def canonical_rdata(rd: dns.rdata.Rdata) -> str:
    """Canonical text of one rdata: compressed lower-case IPv6 (RFC 5952, as dnspython prints
    it), dotted-quad IPv4, absolute lower-case PTR targets."""
    target = getattr(rd, "target", None)
    if isinstance(target, dns.name.Name):
        return to_dns_name(target).to_text()
    return rd.to_text()


def canonical_value(rtype: RecordType | str, value: str) -> str:
    return parse_canonical(rtype, value)[0]


def canonical_values(rtype: RecordType | str, values: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated canonical texts (the form :class:`~agent.domain.model.RecordSet`
    holds)."""
    return tuple(sorted({canonical_value(rtype, v) for v in values}))


def reverse_name(address: str) -> str:
    """The PTR owner name of an address: ``192.0.2.10`` -> ``10.2.0.192.in-addr.arpa.``,
    ``2001:db8::1`` -> the 32 nibbles under ``ip6.arpa.`` (RFC 3596 section 2.5).

    The planner's :func:`agent.domain.planning.ptr_name` makes the name (the same one the
    inventory reads and the plan writes); the address is checked with :mod:`ipaddress` first
    for a clear error.
    """
    # Imported here: the planner imports this module for the host-name rule, and the config
    # (which the planner imports) checks host names with it at load time.
    from agent.domain.planning import ptr_name

    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError as exc:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from exc
    return ptr_name(str(parsed))


def record_label(name: str, rtype: RecordType | str) -> str:
    """How errors and reports name one RRset: ``"host1.example.test. A"``."""
    return f"{name} {rtype}"


# ------------------------------------------------------------------------ host names of VMs

MAX_LABEL = 63
"""Octets in one DNS label (RFC 1035 section 2.3.4)."""
MAX_NAME = 253
"""Characters in a name written without its trailing dot: 255 octets on the wire (RFC 1035
section 2.3.4) less the length octets of the first label and the root."""

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_PLAIN_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_SEPARATORS = re.compile(r"[\s_]+")
_HYPHENS = re.compile(r"-{2,}")


class HostNameError(ValueError):
    """A name that cannot be (or become) a DNS host name; the message says why."""


def derive_host_label(vm_name: str) -> str:
    """The host part of a VM's DNS name, derived from its VMM name by the one documented rule
    (README, "DNS host names"):

    1. Unicode is normalised to NFC; dots separate labels, as in the VM name ``sql01.corp``.
    2. Spaces (any white space) and underscores become hyphens.
    3. Every other character that is neither a letter, a digit nor a hyphen is dropped (quotes,
       punctuation, symbols, control characters): ``o'brien`` -> ``obrien``.
    4. Runs of hyphens become one; hyphens at the start or end of a label are dropped.
    5. A label with non-ASCII letters is IDNA-encoded (``müller`` -> ``xn--mller-kva``), others
       are lower-cased.
    6. A label must then hold 1 to 63 characters; there is no truncation (two long names would
       silently become one): a VM whose name breaks this needs ``dns.hostnames``.

    ``HostNameError`` says which rule the name breaks.
    """
    lowered = vm_name.lower()
    if lowered.isascii() and "--" not in lowered and _PLAIN_NAME.match(lowered):
        return lowered  # the common case, which every step above leaves as it is but for case
    labels = []
    for part in unicodedata.normalize("NFC", vm_name).split("."):
        text = _SEPARATORS.sub("-", part)
        text = "".join(c for c in text if c == "-" or c.isalnum())
        text = _HYPHENS.sub("-", text).strip("-")
        if not text:
            raise HostNameError(
                f"VM name {vm_name!r} leaves no letters or digits for a DNS label"
                + (f" in its part {part!r}" if part != vm_name else "")
            )
        labels.append(_label(text, vm_name))
    return ".".join(labels)


def derive_host_name(vm_name: str, domain: str) -> str:
    """``<derive_host_label(vm_name)>.<domain>``, fully qualified; ``HostNameError`` when the
    whole name is over 253 characters."""
    name = f"{derive_host_label(vm_name)}.{domain.rstrip('.')}".rstrip(".") + "."
    _check_length(name, f"the DNS name derived from VM name {vm_name!r}")
    return name


def configured_host_name(text: str, *, what: str = "host name") -> str:
    """A host name written in the config (``dns.hostnames``, ``dns.default_domain``) as the
    agent writes it: lower case, IDNA for non-ASCII labels, a trailing dot. Unlike a VM name it
    is not rewritten: a label that is not letters, digits and inner hyphens is refused, as are
    empty labels and names over the DNS limits."""
    name = text.strip()
    if not name or name == ".":
        raise HostNameError(f"a {what} needs at least one label")
    body = name[:-1] if name.endswith(".") else name
    labels = []
    for part in body.split("."):
        if not part:
            raise HostNameError(f"{what} {text!r} has an empty label")
        folded = unicodedata.normalize("NFC", part)
        if folded.isascii():
            folded = folded.lower()
            if not _LDH_LABEL.match(folded):
                raise HostNameError(
                    f"{what} {text!r}: label {part!r} may hold only letters, digits and hyphens, "
                    f"and may not start or end with a hyphen"
                )
            if len(folded) > MAX_LABEL:
                raise HostNameError(_too_long_label(folded, what, text))
            labels.append(folded)
        else:
            labels.append(_label(folded, text, what=what))
    fqdn = ".".join(labels) + "."
    _check_length(fqdn, f"{what} {text!r}")
    return fqdn


def _label(text: str, source: str, *, what: str = "VM name") -> str:
    """One label of letters, digits and inner hyphens: lower-cased, or IDNA-encoded."""
    if text.isascii():
        label = text.lower()
    else:
        try:
            # Python's codec is IDNA 2003 (nameprep + punycode), as dnspython's without the idna
            # package: what the DNS layer would send.
            label = text.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise HostNameError(f"{what} {source!r}: {text!r} has no IDNA form ({exc})") from exc
    if len(label) > MAX_LABEL:
        raise HostNameError(_too_long_label(label, what, source))
    if not _LDH_LABEL.match(label):  # nameprep can map a letter to punctuation (NFKC: ½ -> 1⁄2)
        raise HostNameError(f"{what} {source!r}: its DNS label {label!r} is not letters, digits and hyphens")
    return label


def _too_long_label(label: str, what: str, source: str) -> str:
    return (f"{what} {source!r}: the DNS label {label[:20]}... is {len(label)} characters, over the "
            f"{MAX_LABEL} DNS allows")


def _check_length(fqdn: str, what: str) -> None:
    if len(fqdn) - 1 > MAX_NAME:
        raise HostNameError(f"{what} is {len(fqdn) - 1} characters, over the {MAX_NAME} DNS allows")
