"""Routes: the partial-subnet check and the route moves of subnets that keep their addresses.

A subnet whose addresses are retained moves whole, so it must fail over whole (no VM with an
address in it stays behind), and its routes move with it.
"""

from __future__ import annotations

from collections import defaultdict

from agent.config import Announcement, WholeSubnet
from agent.domain import validation as v
from agent.domain.ipam import PrefixIndex, to_int
from agent.domain.model import Route
from agent.domain.plan import MoveRoute
from agent.domain.planning.index import route_key
from agent.domain.planning.state import PlannerState
from agent.domain.planning.work import Slot


def _announced(prefix: str, a: Announcement) -> Route:
    return Route(router=a.router, prefix=prefix, next_hop=a.next_hop, interface=a.interface, metric=a.metric)


class RoutePlanning(PlannerState):
    def check_subnets(self, slots: list[Slot]) -> list[WholeSubnet]:
        """Retained addresses: their declared subnet must move whole (every VM at the source
        site with an address in it must be in the plan); an undeclared one is refused.
        Returns the subnets that move."""
        index: PrefixIndex[int] = PrefixIndex()
        for i, sn in enumerate(self.config.subnets):
            index.add(sn.prefix, i)
        moving: dict[int, list[str]] = {}
        undeclared: dict[str, list[str]] = {}
        for s in slots:
            if not s.retained or s.pool is None:  # retained implies a pool
                continue
            hit = index.lookup(s.version, s.source_int)
            if hit is None:
                undeclared.setdefault(s.pool.prefix, []).append(f"{s.source} ({s.nic.vm.name}/{s.nic.name})")
            elif not self.config.subnets[hit].stretched:
                vms = moving.setdefault(hit, [])
                if not vms or vms[-1] != s.nic.vm.name:
                    vms.append(s.nic.vm.name)
        for prefix, addresses in undeclared.items():
            self.refusals.add(v.retained_subnet_undeclared(prefix, addresses))
        if not moving:
            return []
        left = self._left_behind(index, moving)
        for i in sorted(moving):
            if left.get(i):
                self.refusals.add(v.partial_subnet_failover(
                    self.config.subnets[i].prefix, self.source_site, left[i], sorted(set(moving[i]))
                ))
        return [self.config.subnets[i] for i in sorted(moving)]

    def _left_behind(self, index: PrefixIndex[int], moving: dict[int, list[str]]) -> dict[int, list[str]]:
        """Per moving subnet, the primaries at the source site outside the plan with an address in it:
        one pass over the site's VMs, whatever the number of subnets."""
        in_plan = {vm.name for vm in self.vms}
        # A VM an unplanned failover leaves out (its state unreadable) does not hold the others back.
        excluded = {name for name, _ in self.excluded}
        left: dict[int, list[str]] = defaultdict(list)
        for other in self.idx.vms_by_site.get(self.source_site, ()):
            if other.role != "primary" or other.name in in_plan or other.name in excluded:
                continue
            for nic in other.nics:
                for c in nic.ip_configurations:
                    if c.address is None:
                        continue
                    hit = index.lookup(*to_int(c.address))
                    if hit in moving and (not left[hit] or left[hit][-1] != other.name):
                        left[hit].append(other.name)
        return left

    def route_changes(self, moved: list[WholeSubnet]) -> None:
        src, dst = self.source_site, self.target_site
        for sn in moved:
            withdraw = [_announced(sn.prefix, a) for a in sn.announcements.get(src, [])]
            announce = [_announced(sn.prefix, a) for a in sn.announcements.get(dst, [])]
            for t in sn.third_site_routes:
                if src in t.next_hop_by_site:
                    withdraw.append(Route(router=t.router, prefix=sn.prefix, next_hop=t.next_hop_by_site[src],
                                          metric=t.metric))
                if dst in t.next_hop_by_site:
                    announce.append(Route(router=t.router, prefix=sn.prefix, next_hop=t.next_hop_by_site[dst],
                                          metric=t.metric))
            # A route wanted at both ends (a third-site router with one next hop for both sites)
            # stays as it is rather than flapping.
            both = {route_key(r) for r in withdraw} & {route_key(r) for r in announce}
            withdraw = [r for r in withdraw if route_key(r) in self.idx.routes and route_key(r) not in both]
            announce = [r for r in announce if route_key(r) not in self.idx.routes and route_key(r) not in both]
            if withdraw or announce:
                self.changes.append(MoveRoute(
                    prefix=sn.prefix, from_site=src, to_site=dst, withdraw=tuple(withdraw), announce=tuple(announce)
                ))
            else:
                self.note(f"subnet {sn.prefix}: routes already point at {dst}")
