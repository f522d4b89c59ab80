"""Commit lifts the failover TTL from every record the failover wrote: a record that existed gets
its own TTL back, a PTR that moved (the host name left the old address's PTR for the new one's)
the TTL of the PTR it replaces, and a PTR created where the VM had none ``dns.ttl.record_ttl``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.domain.model import RecordType
from agent.engine.model import OperationKind, OpStatus
from tests.rigs import CONFIG_DIR, Templates, copy_demo

APP01_OLD_PTR = '          - {name: "10", type: PTR, ttl: 3600, values: [app01.corp.contoso.example.]}\n'
APP02_OLD_PTR = '          - {name: "11", type: PTR, ttl: 3600, values: [app02.corp.contoso.example.]}\n'


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    inventory = (CONFIG_DIR / "demo-inventory.yaml").read_text()
    assert APP01_OLD_PTR in inventory and APP02_OLD_PTR in inventory
    # app01's PTR has a TTL of its own; app02 has no PTR at all before the failover.
    inventory = inventory.replace(APP01_OLD_PTR, APP01_OLD_PTR.replace("ttl: 3600", "ttl: 7200"))
    inventory = inventory.replace(APP02_OLD_PTR, "")

    def edit(cfg: dict) -> None:
        cfg["dns"]["ttl"]["record_ttl"] = 1800

    return Templates.build(copy_demo(Path(tmp_path_factory.mktemp("ttl")), edit=edit, inventory=inventory))


def test_commit_gives_every_record_the_failover_wrote_its_normal_ttl(new_rig, templates: Templates) -> None:
    rig = new_rig(templates=templates)
    dns = rig.ports.dns["dns-contoso"]

    def ttls() -> dict[str, tuple[int, tuple[str, ...]] | None]:
        forward = {r.name: r for r in dns.read("corp.contoso.example.", [
            ("app01.corp.contoso.example.", RecordType.A), ("app02.corp.contoso.example.", RecordType.A)])}
        reverse = {r.name: r for r in dns.read("1.16.172.in-addr.arpa.", [
            ("10.1.16.172.in-addr.arpa.", RecordType.PTR), ("11.1.16.172.in-addr.arpa.", RecordType.PTR)])}
        return {name: (r.ttl, r.values) for name, r in {**forward, **reverse}.items()}

    assert rig.start(OperationKind.PLANNED_FAILOVER).status == OpStatus.SUCCEEDED.value
    assert {ttl for ttl, _ in ttls().values()} == {60}, "written with the failover TTL"

    commit = rig.start(OperationKind.COMMIT)

    assert commit.status == OpStatus.SUCCEEDED.value, commit.errors
    assert ttls() == {
        "app01.corp.contoso.example.": (3600, ("172.16.1.10",)),  # its own TTL
        "app02.corp.contoso.example.": (3600, ("172.16.1.11",)),
        "10.1.16.172.in-addr.arpa.": (7200, ("app01.corp.contoso.example.",)),  # the PTR it replaces
        "11.1.16.172.in-addr.arpa.": (1800, ("app02.corp.contoso.example.",)),  # new: dns.ttl.record_ttl
    }
    lifted = {a.target: a.details["ttl"] for a in rig.store.audit_trail(commit.id) if a.action == "dns.restore_ttl"}
    assert lifted["dns-contoso/11.1.16.172.in-addr.arpa./PTR"] == 1800
