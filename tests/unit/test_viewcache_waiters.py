"""Polls that wait for a view being rebuilt: answered with what the store held after they
arrived, and without one rebuild each."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from agent.api.viewcache import ViewCache

BODY = {"id": "op-1", "status": "running", "created_at": "2026-12-04T00:00:00+00:00", "finished_at": None,
        "elapsed_s": 0.0}


class MovingStore(ViewCache):
    """A store that moves on between any two reads, as a running 1,000-VM failover's does."""

    def __init__(self, first_build: threading.Event) -> None:
        super().__init__(store=None, build=self._build)  # type: ignore[arg-type]
        self.reads = itertools.count(1)
        self.read = 0
        self.builds = 0
        self.first_build = first_build
        self.building = threading.Event()

    def signature(self, op_id: str) -> tuple[Any, ...] | None:
        self.read = next(self.reads)
        return (self.read,)

    def _build(self, op_id: str) -> dict[str, Any]:
        self.builds += 1
        if self.builds == 1:
            self.building.set()
            self.first_build.wait(10)
        return dict(BODY)


def test_polls_waiting_for_a_rebuild_share_the_next_one_and_none_is_older_than_its_arrival() -> None:
    release = threading.Event()
    views = MovingStore(release)
    answers: list[tuple[int, int]] = []  # (the store's last read when the poll arrived, its answer's read)

    def poll() -> None:
        arrived = views.read
        answers.append((arrived, views.current("op-1").signature[0]))

    first = threading.Thread(target=poll)
    first.start()
    assert views.building.wait(10)
    waiters = [threading.Thread(target=poll) for _ in range(5)]
    for t in waiters:
        t.start()
    time.sleep(0.3)  # sequencing, not measured: the five are queued behind the first build
    release.set()
    for t in [first, *waiters]:
        t.join(10)

    assert len(answers) == 6
    assert all(got > arrived for arrived, got in answers), answers
    # The first build, then one for all five (each reading the store again rebuilt it five times).
    assert views.builds == 2
