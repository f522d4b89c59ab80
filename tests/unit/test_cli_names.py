"""Names as a site admin meets them on the command line: VMM names with quotes, spaces and
unicode; DNS names that cannot be, refused at validate with the VM's line; names matched as VMM
matches them, with a did-you-mean; and names or notes that try to steer the terminal shown, not
obeyed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import EXIT_OK, EXIT_REFUSED
from agent.configfile import DEMO_PLAN
from tests.rigs import run_cli as run

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "\x1b[2J\x9b31m\rgone\b\x07 \u202etxt.exe"
"""Clear screen, a one-byte CSI, carriage return, backspace, bell, a right-to-left override."""
RAW = ("\x1b", "\x9b", "\r", "\b", "\x07", "\u202e")

pytestmark = pytest.mark.usefixtures("cli_env")




def site(tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None,
         edit_inventory: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The demo config and its inventory as files of this test, optionally edited."""
    data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["agent"]["data_dir"] = str(tmp_path / "var")
    if edit:
        edit(data)
    inventory = yaml.safe_load((REPO / "config" / "demo-inventory.yaml").read_text(encoding="utf-8"))
    if edit_inventory:
        edit_inventory(inventory)
    (tmp_path / "demo-inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False, allow_unicode=True),
                                                  encoding="utf-8")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def assert_nothing_raw(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def rename_vm(old: str, new: str) -> tuple[Callable[[dict], None], Callable[[dict], None]]:
    """Edits that rename a demo VM in the plan and at the sites."""

    def config(data: dict) -> None:
        for group in data["recovery_plans"][0]["groups"]:
            group["vms"] = [new if vm == old else vm for vm in group["vms"]]

    def inventory(inv: dict) -> None:
        for s in inv["sites"]:
            for vm in s.get("vms", []):
                if vm["name"] == old:
                    vm["name"] = new

    return config, inventory


# ------------------------------------------------------------------------- VMM names


def test_vmm_names_with_quotes_spaces_and_unicode_validate_and_plan(tmp_path: Path) -> None:
    cfg_a, inv_a = rename_vm("app01", "o'brien")
    cfg_b, inv_b = rename_vm("app02", "Web 01 (Müller)")
    config = site(tmp_path, lambda d: (cfg_a(d), cfg_b(d)), lambda i: (inv_a(i), inv_b(i)))
    validated = run("validate", "--config", str(config))
    assert validated.exit_code == EXIT_OK, validated.output

    planned = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--json")
    assert planned.exit_code == EXIT_OK, planned.output
    names = {c["name"] for c in json.loads(planned.stdout)["changes"] if c.get("type") == "A"}
    # The documented rule: quotes and parentheses dropped, spaces to hyphens, IDNA for unicode.
    assert names == {"obrien.corp.contoso.example.", "xn--web-01-mller-klb.corp.contoso.example."}


@pytest.mark.parametrize(("vm", "why"), [
    ("!!!", "leaves no letters or digits"),
    ("a" * 64, "64 characters, over the 63"),
    ("münchen" * 9, "has no IDNA form"),  # its punycode is over 63 characters
])
def test_a_vm_name_that_gives_no_dns_name_is_refused_at_validate_with_its_line(
        tmp_path: Path, vm: str, why: str) -> None:
    config = site(tmp_path, lambda d: d["recovery_plans"][0]["groups"][1]["vms"].append(vm))
    result = run("validate", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "recovery_plans[0].groups[1].vms[2]" in result.stderr and why in result.stderr
    assert "dns.hostnames" in result.stderr  # says how to fix it
    assert run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "test").exit_code == EXIT_REFUSED


def test_a_name_longer_than_the_store_holds_is_refused_at_validate(tmp_path: Path) -> None:
    config = site(tmp_path, lambda d: d["recovery_plans"][0]["groups"][1]["vms"].append("v" * 129))
    result = run("validate", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED
    assert "recovery_plans[0].groups[1].vms[2]: string should have at most 128 characters" in result.stderr


def test_a_dns_name_from_dns_hostnames_lets_such_a_vm_in(tmp_path: Path) -> None:
    cfg, inv = rename_vm("app02", "a" * 64)

    def edit(data: dict) -> None:
        cfg(data)
        data["dns"]["hostnames"] = {"A" * 64: "app02.corp.contoso.example"}  # matched case-insensitively

    planned = run("plan", "--config", str(site(tmp_path, edit, inv)), "--plan", DEMO_PLAN, "--kind", "planned",
                  "--json")
    assert planned.exit_code == EXIT_OK, planned.output
    changes = [c for c in json.loads(planned.stdout)["changes"] if c.get("type") == "A"]
    assert {c["name"] for c in changes} == {"app01.corp.contoso.example.", "app02.corp.contoso.example."}


def test_two_vms_that_would_share_a_dns_name_are_refused(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["recovery_plans"][0]["groups"][1]["vms"] += ["web 01", "web_01"]

    result = run("validate", "--config", str(site(tmp_path, edit)))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "recovery_plans[0].groups[1].vms[3]" in result.stderr
    assert "'web_01' would get the DNS name web-01.corp.contoso.example." in result.stderr
    assert "'web 01'" in result.stderr


def test_dns_hostnames_for_one_vm_spelt_twice_are_refused(tmp_path: Path) -> None:
    config = site(tmp_path, lambda d: d["dns"].update(hostnames={"app01": "a.corp", "APP01": "b.corp"}))
    result = run("validate", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED
    assert "'APP01' and 'app01' are the same VM to VMM" in result.stderr


@pytest.mark.parametrize("hostname", ["evil name.corp.example", "a..b", "-x.corp", "x_y.corp", "*.corp",
                                      "a" * 64 + ".corp", ("b" * 60 + ".") * 5, "x\x00.corp"])
def test_a_hostile_or_oversized_dns_hostname_is_refused_at_its_key(tmp_path: Path, hostname: str) -> None:
    config = site(tmp_path, lambda d: d["dns"].update(hostnames={"app01": hostname}))
    result = run("validate", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED, result.output
    assert "dns.hostnames.app01" in result.stderr
    assert_nothing_raw(result.stderr)
    assert "\x00" not in result.stderr


# -------------------------------------------------------------- matched as VMM matches


def test_vm_and_plan_names_match_case_insensitively(tmp_path: Path) -> None:
    cfg, _ = rename_vm("sql01", "SQL01")
    config = site(tmp_path, cfg)
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    planned = run("plan", "--config", str(config), "--plan", "CONTOSO-Apps", "--kind", "planned", "--json")
    assert planned.exit_code == EXIT_OK, planned.output
    body = json.loads(planned.stdout)
    # From here on the inventory's spelling: that is what VMM and Hyper-V hold.
    assert "sql01" in [vm["name"] for vm in body["vms"]] and "SQL01" not in planned.stdout


def test_network_names_match_case_insensitively_and_the_plan_spells_them_as_vmm(tmp_path: Path) -> None:
    def shout(data: dict) -> None:
        first = data["network_mappings"][0]
        first["source"]["vm_network"] = "East-Core"
        first["target"]["vm_network"] = "WEST-CORE"
        first["test_network"]["vm_network"] = "West-Drill"

    config = site(tmp_path, shout)
    assert run("validate", "--config", str(config)).exit_code == EXIT_OK
    for kind in ("planned", "test"):
        shouted = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", kind, "--json")
        plain = run("plan", "--plan", DEMO_PLAN, "--kind", kind, "--json")
        assert shouted.exit_code == EXIT_OK, shouted.output
        assert json.loads(shouted.stdout)["changes"] == json.loads(plain.stdout)["changes"]


def test_a_misspelt_network_gets_a_did_you_mean(tmp_path: Path) -> None:
    config = site(tmp_path, lambda d: d["network_mappings"][1]["target"].update(vm_network="west-aps"))
    result = run("validate", "--config", str(config))
    assert result.exit_code == EXIT_REFUSED
    assert "network_mappings[1].target.vm_network" in result.stderr
    assert "VM network 'west-aps' does not exist at site contoso-west; did you mean 'west-apps'?" in result.stderr


def test_a_misspelt_vm_gets_a_did_you_mean(tmp_path: Path) -> None:
    cfg, _ = rename_vm("sql01", "sq101")
    result = run("validate", "--config", str(site(tmp_path, cfg)))
    assert result.exit_code == EXIT_REFUSED
    assert "VM 'sq101' is not in the inventory of either site; did you mean 'sql01'?" in result.stderr


def test_a_misspelt_plan_gets_a_did_you_mean() -> None:
    result = run("plan", "--plan", "contoso-app", "--kind", "test")
    assert result.exit_code == EXIT_REFUSED
    assert "did you mean 'contoso-apps'?" in result.stderr


# ------------------------------------------------------------------- output hygiene


def test_a_hostile_note_is_shown_not_obeyed_and_json_keeps_it_exact() -> None:
    started = run("run", "--plan", DEMO_PLAN, "--kind", "test")
    op = next(w for w in started.stdout.split() if w.startswith("op-") and len(w) == 15)
    noted = run("ops", "note", op, HOSTILE, "--author", "mallory\x1b]0;pwned\x07")
    assert noted.exit_code == EXIT_OK, noted.output
    assert_nothing_raw(noted.stdout)

    shown = run("ops", "show", op)
    assert shown.exit_code == EXIT_OK
    assert_nothing_raw(shown.stdout)
    assert "\\x1b[2J\\x9b31m\\rgone\\x08\\x07 \\u202etxt.exe" in shown.stdout

    audit = run("ops", "audit", op)
    assert audit.exit_code == EXIT_OK
    assert_nothing_raw(audit.stdout)
    assert "mallory\\x1b]0;pwned\\x07" in audit.stdout

    trail = json.loads(run("ops", "audit", op, "--json").stdout)
    assert trail[-1]["actor"] == "mallory\x1b]0;pwned\x07"  # exact, and the JSON is valid
    shown_json = run("ops", "show", op, "--json")
    assert_nothing_raw(shown_json.stdout)  # escaped by JSON itself
    assert any(n["text"] == HOSTILE for n in json.loads(shown_json.stdout)["notes"])


def test_a_name_with_a_bidi_override_is_shown_escaped_in_the_plan(tmp_path: Path) -> None:
    cfg, inv = rename_vm("app02", "app\u202e02")
    config = site(tmp_path, cfg, inv)
    planned = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned")
    assert planned.exit_code == EXIT_OK, planned.output
    assert_nothing_raw(planned.stdout)
    assert "app\\u202e02" in planned.stdout
    as_json = run("plan", "--config", str(config), "--plan", DEMO_PLAN, "--kind", "planned", "--json")
    assert "app\u202e02" in [vm["name"] for vm in json.loads(as_json.stdout)["vms"]]


def test_control_characters_in_an_error_are_shown_not_obeyed(tmp_path: Path) -> None:
    unknown = run("plan", "--plan", HOSTILE, "--kind", "test")
    assert unknown.exit_code == EXIT_REFUSED
    assert_nothing_raw(unknown.stderr)

    config = site(tmp_path, lambda d: d["recovery_plans"][0]["groups"][0]["vms"].append("sql\x1b[2J02"))
    refused = run("validate", "--config", str(config))
    assert refused.exit_code == EXIT_REFUSED
    assert_nothing_raw(refused.stderr)
    assert "recovery_plans[0].groups[0].vms[1]" in refused.stderr and "U+001B" in refused.stderr
