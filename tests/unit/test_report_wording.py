"""How the drill report words times and audit values (``agent.report.render``)."""

from __future__ import annotations

import pytest

from agent.report.render import NOT_READ, duration, shown


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.4242, "0.42 s"), (12.34, "12.3 s"), (245, "4 min 05 s"), (3723.4, "1 h 02 min 03 s"),
])
def test_durations_read_as_an_auditor_writes_them(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [
    (None, NOT_READ),
    ({"values": ["192.168.2.10"], "ttl": 3600}, "192.168.2.10 (TTL 3600)"),
    ({"values": "absent", "ttl": None}, "absent"),
    ({"state": "Replicating", "test_vm": "sql01 - Test"}, "Replicating, test VM sql01 - Test"),
    ({"address": "172.16.1.10", "granted_to": "app01/nic0"}, "172.16.1.10 granted to app01/nic0"),
    ({"network": "west-core", "subnet": "core", "addresses": []}, "network west-core, subnet core"),
    ({"host": "hv-west-01", "stdout": "", "succeeded": False}, "script failed"),
    ([], "none"),
    (["via 10.20.0.1 metric 256"], "via 10.20.0.1 metric 256"),
])
def test_audit_values_read_in_a_few_words(value: object, text: str) -> None:
    assert shown(value) == text
