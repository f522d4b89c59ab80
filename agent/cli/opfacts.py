"""What ``ops show`` tells beyond the journal's own view of an operation: where it did otherwise
than its preview (from the audit trail), and -- for a failover that did not end well -- where its
VMs are now, as the sites report them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.configfile import LoadedConfig
    from agent.engine.journal import Journal
    from agent.engine.store import OperationRow, StepRow


def deviations_from_preview(journal: Journal, op_id: str) -> list[tuple[dict[str, object], str]]:
    """Where the operation did otherwise than its preview said, from the audit trail: addresses
    VMM granted in place of planned ones (taken meanwhile), and the DNS records written with them."""

    from agent.engine.actions.grants import DNS_DEVIATION
    from agent.engine.actions.vmm import GRANT_DEVIATION

    found: list[tuple[dict[str, object], str]] = []
    for a in journal.store.audit_trail(op_id, limit=1_000_000):
        d = a.details or {}
        if a.action == GRANT_DEVIATION:
            found.append(({"kind": "grant", **d}, f"{d['vm']}/{d['nic']}: planned {d['planned']}, VMM granted "
                          f"{d['granted']} (the planned address was taken meanwhile); failover IP and DNS use it"))
        elif a.action == DNS_DEVIATION and "preview" in d:
            found.append(({"kind": "dns", "record": a.target, "preview": d["preview"], "written": d["new"]},
                          f"DNS {a.target}: wrote {d['new']}, the preview said {d['preview']}"))
        elif a.action == DNS_DEVIATION and "preview_record" in d:
            found.append(({"kind": "dns", "record": a.target, "preview_record": d["preview_record"],
                           "written": d["new"]},
                          f"DNS {a.target}: wrote {d['new']} in place of {d['preview_record']} (the PTR of "
                          f"{d['planned_address']}, which the preview named)"))
    return found


def where_vms_are(loaded: LoadedConfig, journal: Journal, row: OperationRow,
                  steps: list[StepRow]) -> dict[str, Any]:
    """For a failover that did not end well: the VMs whose steps all succeeded and that run at
    the recovery site (done), and every VM's state as the sites report it now -- a VM powered
    off at both sites is a service down. From the journal alone (``steps``: the operation's, as
    read) when the sites cannot be read."""

    from agent.cli.session import open_engine
    from agent.engine.planstate import done_in_journal
    from agent.errors import AgentError

    done = done_in_journal(loaded.config, row, steps)
    try:
        with open_engine(loaded, journal.store) as engine:
            st = engine.status(row.plan_name)
    except AgentError as exc:
        return {"sites_read": False, "reason": exc.message, "done": done, "off_everywhere": [], "vms": []}
    running = {v.vm: v.running_at for v in st.vms}
    mine = set(row.plan and [v["name"] for v in row.plan.get("vms", [])] or [])
    return {"sites_read": not st.stale, "reason": "; ".join(st.stale) or None,
            "done": [vm for vm in done if row.target_site in running.get(vm, ())],
            "off_everywhere": [v.vm for v in st.vms if v.off_everywhere and v.vm in mine],
            "vms": [v.to_json() for v in st.vms if v.vm in mine]}
