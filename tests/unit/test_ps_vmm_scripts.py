"""What only the VMM scripts promise, beyond the gate every script passes
(tests/unit/test_powershell_gates.py: template, catalog binding, prompts)."""

from __future__ import annotations

import pytest

from agent.drivers.remoting import load_script
from tests import pscheck


@pytest.mark.parametrize(("name", "read"), [("Get-AgentInventory", "Get-SCVirtualMachine"),
                                             ("Set-AgentNicConnection", "Get-SCVirtualNetworkAdapter")])
def test_vmm_is_refreshed_before_a_vm_it_may_not_know_yet_is_trusted(name: str, read: str) -> None:
    """Hyper-V creates and changes VMs behind VMM's back (test failover, failover)."""
    order = [c.name for c in pscheck.commands(load_script(f"vmm/{name}").text.encode())]
    assert "Read-SCVirtualMachine" in order and order.index("Read-SCVirtualMachine") < order.index(read)
