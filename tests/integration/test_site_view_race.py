"""Two processes that read a site at the same moment both cache what they read: the second
insert of the same site view becomes an update instead of a failed command."""

from __future__ import annotations

from sqlalchemy import event

from agent.engine.journal import Journal
from agent.engine.store import Store


def test_a_site_view_written_by_another_process_meanwhile_is_updated_not_duplicated(store_url: str) -> None:
    ours, theirs = Store.open(store_url), Store.open(store_url)
    try:
        raced: list[bool] = []

        def other_process_first(session, flush_context, instances) -> None:
            # Between our read (no row yet) and our insert, the other agent saves its read.
            if not raced:
                raced.append(True)
                Journal(theirs).save_site_view("contoso-west", "vmm", {"by": "them"})

        event.listen(ours._sessions, "before_flush", other_process_first)
        Journal(ours).save_site_view("contoso-west", "vmm", {"by": "us"})

        assert raced == [True]
        data, _ = Journal(theirs).load_site_view("contoso-west", "vmm") or (None, "")
        assert data == {"by": "us"}, "the later read is the one kept"
    finally:
        ours.close()
        theirs.close()
