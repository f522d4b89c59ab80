"""Opening the configured sites for one command: their ports (from the composition root) and,
unless the engine reads its own, the inventory they hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rich.markup import escape

from agent.cli.app import err
from agent.configfile import LoadedConfig
from agent.domain.model import Inventory
from agent.ports import Ports

if TYPE_CHECKING:
    from agent.wiring import SimulatedSites


@dataclass
class OpenSites:
    loaded: LoadedConfig
    ports: Ports
    inventory: Inventory | None
    simulator: SimulatedSites | None
    """The simulated sites, when the config uses them (the demo compares them before and after)."""

    @property
    def read(self) -> Inventory:
        """The inventory read when the sites were opened."""
        assert self.inventory is not None, "opened with read_inventory=False"
        return self.inventory


@contextmanager
def open_sites(loaded: LoadedConfig, *, reset_simulator: bool = False,
               dns_purpose: Literal["production", "test"] | None = None,
               read_inventory: bool = True) -> Iterator[OpenSites]:
    """Ports for ``loaded`` and the inventory they read (unless ``read_inventory`` is false: the
    engine reads its own); closed on the way out. What the composition root noticed while
    opening (a simulated world older than its inventory) is printed as a warning."""

    from agent.inventory import gather_inventory
    from agent.wiring import connect

    with connect(loaded, reset_simulator=reset_simulator) as connection:
        for notice in connection.notices:
            err.print(f"[yellow]warning:[/] {escape(notice)}")
        inventory = (gather_inventory(loaded.config, connection.ports, dns_purpose=dns_purpose)
                     if read_inventory else None)
        yield OpenSites(loaded, connection.ports, inventory, connection.simulator)
