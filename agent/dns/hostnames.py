"""Which DNS names the VMs of a config's recovery plans get, checked when the config is loaded.

Every VM of a recovery plan whose records the agent updates must get a valid DNS name
(:meth:`agent.config.DnsConfig.host_name_of`: ``dns.hostnames``, else the rule of
:func:`agent.dns.names.derive_host_label`), and no two VMs the same one. Found at load, so at
``validate`` and ``plan``, not at the DNS step of a run after the VMs were shut down (where one
bad name would also fail the rest of its batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.dns.names import HostNameError
from agent.domain.matching import Names, fold

if TYPE_CHECKING:
    from agent.config import AgentConfig


def host_name_problems(config: AgentConfig) -> list[str]:
    """One ``key.path: message`` line per VM that gets no valid DNS name or another VM's, and per
    VM that ``dns.hostnames`` names twice (in two spellings)."""
    dns = config.dns
    problems: list[str] = []
    keys: dict[str, str] = {}
    for vm in dns.hostnames:
        if fold(vm) in keys:
            problems.append(f"dns.hostnames: {vm!r} and {keys[fold(vm)]!r} are the same VM to VMM (names "
                            f"are matched case-insensitively); keep one")
        keys.setdefault(fold(vm), vm)
    explicit = Names(dns.hostnames.items())
    self_registering = Names((vm, True) for vm in dns.self_registering_vms)
    owner: dict[str, tuple[str, str]] = {}  # DNS name -> (VM, where its name comes from)
    done: set[str] = set()
    for i, p in enumerate(config.recovery_plans):
        for j, g in enumerate(p.groups):
            for k, vm in enumerate(g.vms):
                if fold(vm) in done or vm in self_registering:
                    continue
                done.add(fold(vm))
                # The VM's own line: its name may hold dots, which a key path cannot.
                where = f"recovery_plans[{i}].groups[{j}].vms[{k}]"
                try:
                    name = dns.host_name_of(vm)
                except HostNameError as exc:
                    problems.append(f"{where}: {exc}; give VM {vm!r} a host name under dns.hostnames")
                    continue
                if name is None:
                    continue
                if name in owner:
                    other, other_where = owner[name]
                    how = "dns.hostnames gives it" if vm in explicit else "derived from its name"
                    problems.append(
                        f"{where}: VM {vm!r} would get the DNS name {name} ({how}), which VM {other!r} "
                        f"({other_where}) already gets; give one of them another under dns.hostnames"
                    )
                owner.setdefault(name, (vm, where))
    return problems
