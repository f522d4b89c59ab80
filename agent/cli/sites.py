"""Opening the configured sites: their drivers and the inventory they read, with the
simulator's state file checked first. Used by validate/plan and by every operation session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from agent.cli.app import err


@dataclass
class _World:
    loaded: Any
    drivers: Any
    inventory: Any


@contextmanager
def _open_world(loaded: Any, *, reset_sim: bool = False, dns_purpose: str | None = None,
                read_inventory: bool = True) -> Iterator[_World]:
    """Drivers for ``loaded`` and the inventory they read (unless ``read_inventory`` is false: the
    engine reads its own); closed on the way out."""

    from agent.drivers import build_drivers
    from agent.inventory import gather_inventory

    _check_sim_inventory(loaded)
    _prepare_sim_state(loaded, reset=reset_sim)
    drivers = build_drivers(loaded)
    try:
        inventory = (gather_inventory(loaded.config, drivers, dns_purpose=dns_purpose)  # type: ignore[arg-type]
                     if read_inventory else None)
        yield _World(loaded, drivers, inventory)
    finally:
        drivers.close()


def _check_sim_inventory(loaded: Any) -> None:
    # The simulator reads its inventory only when it seeds a new state file; a broken inventory
    # must be reported every time, not only on the first run.
    if loaded.simulator_inventory is None:
        return
    from agent.drivers.sim.inventory import load_inventory

    load_inventory(loaded.simulator_inventory)


def _prepare_sim_state(loaded: Any, *, reset: bool) -> None:
    """The demo's world is disposable: start it afresh when asked or when the shipped inventory
    changed (an upgrade). Any other config only gets a warning: its state may matter."""

    if loaded.simulator_inventory is None or loaded.simulator_state is None:
        return
    if not loaded.simulator_state.exists():
        return
    from agent.drivers.sim import SimWorld

    world = SimWorld.open(loaded.simulator_inventory, loaded.simulator_state)
    if reset or (loaded.is_demo and world.inventory_changed):
        world.reset()
    elif world.inventory_changed:
        err.print(
            f"[yellow]warning:[/] {escape(str(loaded.simulator_inventory))} changed since the simulated "
            f"world in {escape(str(loaded.simulator_state))} was created from it; the world still "
            "shows the old inventory (delete the state file to start afresh)."
        )
