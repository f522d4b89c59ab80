"""DNS: the A/AAAA and PTR changes that follow every address the plan changes.

Each name goes to the longest configured zone served by a DNS server of the plan's purpose
(production, or test DNS for a test failover).
"""

from __future__ import annotations

from agent.config import AgentConfig
from agent.dns.names import HostNameError
from agent.domain import validation as v
from agent.domain.ipam import to_int
from agent.domain.model import RecordType
from agent.domain.plan import DnsChange, Purpose
from agent.domain.planning.state import PlannerState
from agent.domain.planning.work import VmWork

AddressPair = tuple[int, str, str]
"""(IP version, old address, new address) of one static IP configuration."""
PtrWanted = tuple[str, set[str], set[str]]
"""Per PTR name: the VM it is noted under, the host names to add, the host names to drop."""


def host_name(config: AgentConfig, vm: str) -> str | None:
    """A VM's DNS name (fully qualified, lower case): ``dns.hostnames[vm]``, else derived from
    the VM name under ``dns.default_domain`` (:meth:`agent.config.DnsConfig.host_name_of`);
    None when neither is configured."""
    return config.dns.host_name_of(vm)


def ptr_name(address: str) -> str:
    """The reverse-lookup name of an address, as ``dns.reversename.from_address`` gives it
    (the tests hold the two equal); built by hand because dnspython's costs ~40 us a name."""
    if ":" not in address:
        return ".".join(reversed(address.split("."))) + ".in-addr.arpa."
    value = to_int(address)[1]
    if value >> 32 == 0xFFFF:  # IPv4-mapped: dnspython answers with the IPv4 name
        return ".".join(str(b) for b in reversed(value.to_bytes(16, "big")[12:])) + ".in-addr.arpa."
    return ".".join(reversed(f"{value:032x}")) + ".ip6.arpa."


class Zones:
    """Longest-match zone lookup with a cache per parent name (the names of one plan share few
    parents: one domain, a few reverse /24s). ``zones`` maps a zone name to its DNS server."""

    __slots__ = ("zones", "_cache")

    def __init__(self, zones: dict[str, str]) -> None:
        self.zones = zones
        self._cache: dict[str, str | None] = {}

    def __call__(self, name: str) -> str | None:
        if name in self.zones:
            return name
        parent = name.split(".", 1)[1] if "." in name.rstrip(".") else "."
        try:
            return self._cache[parent]
        except KeyError:
            hit = self._cache[parent] = self._walk(parent)
            return hit

    def _walk(self, name: str) -> str | None:
        labels = name.rstrip(".").split(".") if name != "." else []
        for i in range(len(labels)):
            candidate = ".".join(labels[i:]) + "."
            if candidate in self.zones:
                return candidate
        return "." if "." in self.zones else None


class DnsPlanning(PlannerState):
    _host_names: dict[str, str | None]

    def check_host_names(self) -> None:
        """Every VM whose records the agent may update has a valid DNS name, before anything is
        built: one bad name must not fail its whole DNS batch mid-run. (A loaded config refuses
        these at load; a config built in code reaches this.)"""
        self._host_names = {}
        for vm in self.vms:
            if vm.planned.self_registering:
                continue
            try:
                self._host_names[vm.name] = host_name(self.config, vm.name)
            except HostNameError as exc:
                self.refusals.add(v.invalid_dns_name(vm.name, str(exc)))

    def dns_changes(self) -> None:
        dns_cfg = self.config.dns
        if self.test and not any(s.purpose == "test" for s in dns_cfg.servers):
            self.note("no DNS server with purpose 'test' is configured: test DNS is not updated")
            return
        server_purpose = "test" if self.test else "production"
        zone_of = Zones(self._zones(server_purpose))
        ttl = dns_cfg.ttl.failover_ttl
        purpose: Purpose = "test" if self.test else "failover"
        ptr_wanted: dict[str, PtrWanted] = {}
        forward_done: set[tuple[str, RecordType]] = set()
        for vm in self.vms:
            pairs = self._address_pairs(vm)
            if not any(old != new for _, old, new in pairs):
                continue
            name = self._dns_name(vm)
            if name is None:
                continue
            zone = zone_of(name)
            if zone is None:
                self.note_group(("no-zone",), lambda items: f"names in no configured {server_purpose} DNS zone, DNS "
                                                             f"not updated: {items}", f"{name} ({vm.name})")
            else:
                self._forward_changes(vm, name, zone, zone_of.zones[zone], pairs, forward_done, ttl, purpose)
            for _, old, new in pairs:
                if old == new:
                    continue
                ptr_wanted.setdefault(ptr_name(old), (vm.name, set(), set()))[2].add(name)
                ptr_wanted.setdefault(ptr_name(new), (vm.name, set(), set()))[1].add(name)
        self._ptr_changes(ptr_wanted, zone_of, ttl, purpose)

    def _zones(self, server_purpose: str) -> dict[str, str]:
        """Zone name -> server, for the configured zones served by a DNS server of that purpose
        (the first such entry of a zone wins)."""
        servers = {s.name: s for s in self.config.dns.servers}
        zones: dict[str, str] = {}
        for z in self.config.dns.zones:
            server = servers.get(z.server)
            if server is not None and server.purpose == server_purpose:
                zones.setdefault(z.name, z.server)
        return zones

    def _address_pairs(self, vm: VmWork) -> list[AddressPair]:
        """Per static IP configuration that gets an address: its version, old and new address."""
        pairs = []
        for nic in vm.nics:
            for s in nic.slots:
                new = s.test_address if self.test else s.address
                if new is not None:
                    pairs.append((s.version, s.source, new))
        return pairs

    def _dns_name(self, vm: VmWork) -> str | None:
        """The VM's host name, or None (noted) when the agent must not or cannot update its records."""
        if vm.planned.self_registering:
            self.note_group(("self-registering",), lambda items: f"VMs that register themselves in DNS, "
                                                                  f"records left alone: {items}", vm.name)
            return None
        name = self._host_names.get(vm.name)
        if name is None:
            self.note_group(("no-hostname",), lambda items: f"no host name (set dns.default_domain or "
                                                             f"dns.hostnames), DNS not updated: {items}", vm.name)
        return name

    def _forward_changes(
        self, vm: VmWork, name: str, zone: str, server: str, pairs: list[AddressPair],
        done: set[tuple[str, RecordType]], ttl: int, purpose: Purpose,
    ) -> None:
        """The A and AAAA record sets of ``name`` become the new addresses of their family. A name
        shared by several VMs is changed once, by the first of them."""
        for version, rtype in ((4, RecordType.A), (6, RecordType.AAAA)):
            fam = [(old, new) for ver, old, new in pairs if ver == version]
            if not any(old != new for old, new in fam) or (name, rtype) in done:
                continue
            done.add((name, rtype))
            current = self.idx.records.get((zone, name, rtype))
            old_values = tuple(sorted(current.values)) if current else ()
            new_values = tuple(sorted({new for _, new in fam}))
            if set(old_values) == set(new_values) and current is not None and current.ttl == ttl:
                continue
            self.changes.append(DnsChange(
                server=server, zone=zone, name=name, type=rtype, ttl=ttl,
                old_values=old_values, new_values=new_values, vm=vm.name,
                purpose=purpose, old_ttl=current.ttl if current else None,
            ))

    def _ptr_changes(self, wanted: dict[str, PtrWanted], zone_of: Zones, ttl: int, purpose: Purpose) -> None:
        """One change per PTR name: add the host names that move in, drop the ones that move
        out, leave foreign values alone."""
        for ptr, (vm, add, drop) in wanted.items():
            zone = zone_of(ptr)
            if zone is None:
                if add:
                    self.note_group(("no-reverse-zone",), lambda items: f"no reverse zone configured, PTR not "
                                                                         f"added: {items}", f"{ptr} ({vm})")
                continue
            current = self.idx.records.get((zone, ptr, RecordType.PTR))
            old_values = tuple(sorted(current.values)) if current else ()
            new_values = tuple(sorted((set(old_values) - (drop - add)) | add))
            # Values that already hold keep their TTL unless this plan adds to them.
            if set(old_values) == set(new_values) and (not add or (current is not None and current.ttl == ttl)):
                continue
            self.changes.append(DnsChange(
                server=zone_of.zones[zone], zone=zone, name=ptr, type=RecordType.PTR, ttl=ttl,
                old_values=old_values, new_values=new_values, vm=vm, purpose=purpose,
                old_ttl=current.ttl if current else None,
            ))
