"""Fixtures shared by the simulator's tests (``test_sim_*.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.drivers.sim import SimWorld

TWO_SITES = Path(__file__).parents[1] / "fixtures" / "sim" / "two-sites.yaml"


@pytest.fixture
def world(tmp_path: Path) -> SimWorld:
    """A fresh two-site world (``tests/fixtures/sim/two-sites.yaml``) in a state file of its own."""

    return SimWorld.open(TWO_SITES, tmp_path / "state.json")
