"""Planning: from config + inventory to a :class:`~agent.domain.plan.Plan`. Pure; no I/O.

``build_plan(config, inventory, plan_name, kind)`` works out, for every NIC and IP configuration
of every VM of a recovery plan, what the failover will change:

* **Direction.** A VM fails over from where it runs as primary (its ``Replication``) to its
  replica site; all VMs of a plan must go the same way.
* **Network mapping** by (source site, source VM network); a mapping whose *target* is the
  source network is used in reverse (failback). The replica connects to the target network's
  subnet with the source subnet's name, else its first subnet (the source documents' rule).
* **Addresses** per IP configuration, by the mapping's ``ip_strategy``: ``retain`` keeps the
  source address when it is free in the target pool, else any free one; ``change`` takes the
  lowest free one; ``dhcp`` (or a DHCP configuration) is left alone. The replica NIC's existing
  grants are reused, never doubled (see :func:`agent.domain.ipam.allocate`).
* **Failover IPs** (planned/unplanned): one setting per static IP configuration with the pool's
  prefix length, gateway and DNS servers.
* **Test failover** (kind ``test``): a test network (none / existing isolated / created copy),
  test addresses (the failover address when free there), the test VM's connection, test DNS.
  It never touches production: no failover IPs, no routes, no production DNS, no replica NICs.
* **Routes** (planned/unplanned): a declared, non-stretched subnet whose addresses are retained
  moves whole -- withdraw at the source site, announce at the target site, repoint third sites.
* **DNS**: A/AAAA and PTR for every address that changes, in the longest configured zone.

Everything that breaks a rule is collected and raised together as
:class:`~agent.domain.validation.PlanRefused` before a Plan exists.

A plan is idempotent: every change that already holds per the inventory is left out (a grant
that exists is listed as ``ReserveIp(existing=True)`` and does not count as a change), so
planning again after a successful run shows nothing to do.

Performance: the inventory is indexed once into dicts; addresses are allocated as integers per
pool; the partial-subnet check is one pass over the source site's VMs with a prefix index. 10,000
VMs with 30,000 IP configurations plan in well under two seconds (tests/benchmarks).

One module a seam: ``index`` (the inventory as dicts), ``work`` (the work items and the collector
of refusals and notes), ``state`` (what every seam shares), ``vms`` (VMs, mappings, NICs),
``pools`` and ``addresses`` (pool choice, allocation, replica NIC changes), ``testnets`` (test
failover), ``routes``, ``dns``, and ``core``, which runs them in order.
"""

from agent.domain.planning.core import build_plan
from agent.domain.planning.dns import host_name, ptr_name
from agent.domain.planning.index import InventoryIndex
from agent.domain.planning.vms import choose_subnet
from agent.domain.validation import PlanRefused

__all__ = ["InventoryIndex", "PlanRefused", "build_plan", "choose_subnet", "host_name", "ptr_name"]
