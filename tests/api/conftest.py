from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.apiserver import ApiServer, serving
from tests.rigs import Rig


@pytest.fixture
def api(new_rig: Callable[..., Rig]) -> Iterator[ApiServer]:
    """The agent's API served on a fresh demo rig, at a free port of 127.0.0.1."""
    rig = new_rig()
    with serving(rig) as server:
        yield server
