"""Address overrides through the command line: validate refuses what cannot be honoured, naming
VM, NIC, IP configuration and pool at file:line; addresses export|import --csv round-trips, and
an import with bad rows reports each by row and column and changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.cli import EXIT_OK, EXIT_REFUSED
from agent.overrides import FILE_COLUMNS, parse_rows
from tests.rigs import run_cli as run
from tests.unit.test_cli import demo_copy

pytestmark = pytest.mark.usefixtures("cli_env")



def with_overrides(*overrides: dict, file: str | None = None):
    def edit(data: dict) -> None:
        if overrides:
            data["address_overrides"] = list(overrides)
        if file:
            data["address_overrides_file"] = file
    return edit


def problem_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


# ------------------------------------------------------------------------ validate


def test_an_override_outside_its_pool_is_refused_at_validate_naming_vm_nic_ip_configuration_and_pool(
        tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(
        {"vm": "app01", "nic": "nic0", "ip_configuration": 0, "failover": "10.9.9.9"}))
    result = run("validate", "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED, result.output
    [line] = problem_lines(result.stderr)
    line_no = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if "failover: 10.9.9.9" in text)
    assert line.startswith(f"{cfg}:{line_no}: address_overrides[0].failover: ")
    for part in ("VM app01", "NIC nic0", "IP configuration 0", "10.9.9.9", "west-apps-pool", "contoso-west"):
        assert part in line


def test_validate_reports_every_override_that_cannot_be_honoured(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(
        {"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"},                        # good
        {"vm": "app02", "nic": "nic0", "failover": "172.16.1.150", "test": "192.168.1.240"},  # same; test outside
        {"vm": "web01", "nic": "nic0", "failover": "192.168.1.100"},                       # reserved
        {"vm": "sql01", "nic": "nic0", "ip_configuration": 1, "failover": "192.168.1.20"},  # ip 0 keeps it
        {"vm": "sql01", "nic": "nic0", "ip_configuration": 0, "failover": "fd00::5"},      # other family
        {"vm": "sql01", "nic": "nic9", "failover": "192.168.1.50"},                        # no such NIC
        {"vm": "web01", "nic": "nic0", "ip_configuration": 3, "test": "192.168.1.210"},    # no such IP config
        {"vm": "web01", "nic": "nic1", "failover": "10.60.0.5"},                           # DHCP
        {"vm": "nobody", "nic": "nic0", "failover": "172.16.1.160"},                       # in no plan
    ))
    result = run("validate", "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED, result.output
    text = "\n".join(problem_lines(result.stderr))
    expected = [
        (r"address_overrides\[1\]\.failover: .*172\.16\.1\.150 in pool west-apps-pool .* also the override of "
         r"app01/nic0#0"),
        r"address_overrides\[2\]\.failover: .*192\.168\.1\.100 is in the reserved set of pool west-core-pool",
        r"address_overrides\[3\]\.failover: .*192\.168\.1\.20 .* is the address sql01/nic0#0 keeps",
        r"address_overrides\[4\]\.failover: .*fd00::5 is IPv6, the IP configuration is IPv4",
        r"address_overrides\[5\]\.nic: .*VM sql01 has no NIC named 'nic9' \(its NICs: nic0\)",
        r"address_overrides\[6\]\.ip_configuration: .*NIC nic0 has 1 IP configuration; 3 is not one of them",
        r"address_overrides\[7\]\.ip_configuration: .*uses DHCP",
        r"address_overrides\[8\]\.vm: VM nobody is in no recovery plan",
        (r"address_overrides\[1\]\.test: VM app02 NIC nic0 IP configuration 0: test override 192\.168\.1\.240 is "
         r"outside the static IP pool of test VM network west-apps-test-contoso-apps"),
    ]
    for pattern in expected:
        assert re.search(pattern, text), (pattern, text)
    assert "address_overrides[0]" not in text


def test_an_address_given_twice_for_one_ip_configuration_is_refused_with_the_file(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides({"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"},
                                             {"vm": "app01", "nic": "nic0", "test": "172.16.1.151"}))
    result = run("validate", "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED
    assert "address_overrides[1]: VM app01 NIC nic0 IP configuration 0 is given twice" in result.stderr


def test_an_override_taken_by_another_nic_is_refused_in_plan(tmp_path: Path) -> None:
    # sql01 keeps 192.168.1.20 in west-core-pool; web01 cannot have it as its override.
    cfg = demo_copy(tmp_path, with_overrides({"vm": "web01", "nic": "nic0", "failover": "192.168.1.20"}))
    result = run("plan", "--config", str(cfg), "--plan", "contoso-apps", "--kind", "planned")
    assert result.exit_code == EXIT_REFUSED
    assert "[override_taken] VM web01 NIC nic0 IP configuration 0: failover override 192.168.1.20" in result.stderr


# -------------------------------------------------------------------- export, import


def _export(cfg: Path) -> str:
    result = run("addresses", "export", "--csv", "--config", str(cfg))
    assert result.exit_code == EXIT_OK, result.output
    return result.stdout


def _checksum(cfg: Path, kind: str) -> str:
    result = run("plan", "--config", str(cfg), "--plan", "contoso-apps", "--kind", kind, "--json")
    assert result.exit_code == EXIT_OK, result.output
    return json.loads(result.stdout)["checksum"]


def test_plan_shows_that_an_address_comes_from_an_override(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides({"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"}))
    result = run("plan", "--config", str(cfg), "--plan", "contoso-apps", "--kind", "planned")
    assert result.exit_code == EXIT_OK, result.output
    assert ("+ reserve 172.16.1.150 in pool west-apps-pool at contoso-west for nic0 ip 0, changed from "
            "192.168.2.10, from an address override") in result.stdout
    change = next(c for c in json.loads(run("plan", "--config", str(cfg), "--plan", "contoso-apps", "--kind",
                                            "planned", "--json").stdout)["changes"]
                  if c["kind"] == "reserve" and c["vm"] == "app01")
    assert change["override"] is True


def test_an_exported_csv_imported_unchanged_changes_nothing(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(file="overrides.csv"))
    seed = tmp_path / "seed.csv"
    seed.write_text("vm,nic,ip_configuration,failover_override,test_override\n"
                    "app01,nic0,0,172.16.1.150,172.16.1.151\nsql01,nic0,1,,192.168.1.245\n")
    result = run("validate", "--config", str(cfg))
    assert "address overrides: 0 in the config; " in result.stdout and "does not exist yet" in result.stdout
    result = run("addresses", "import", "--csv", str(seed), "--config", str(cfg))
    assert result.exit_code == EXIT_OK, result.output
    overrides = tmp_path / "overrides.csv"
    result = run("validate", "--config", str(cfg))
    assert result.exit_code == EXIT_OK and f"address overrides: 0 in the config, 2 in {overrides}" in result.stdout
    before = overrides.read_bytes()
    sums = (_checksum(cfg, "planned"), _checksum(cfg, "test"))

    exported = _export(cfg)
    assert exported.splitlines()[0] == ("plan,vm,nic,ip_configuration,source_address,planned_failover_address,"
                                        "planned_test_address,failover_override,test_override")
    assert "contoso-apps,app01,nic0,0,192.168.2.10,172.16.1.150,172.16.1.151,172.16.1.150,172.16.1.151" in exported
    assert "contoso-apps,web01,nic1,0,dhcp,,,," in exported
    (tmp_path / "export.csv").write_text(exported)
    result = run("addresses", "import", "--csv", str(tmp_path / "export.csv"), "--config", str(cfg))
    assert result.exit_code == EXIT_OK, result.output
    assert "no change" in result.stdout
    assert overrides.read_bytes() == before
    assert (_checksum(cfg, "planned"), _checksum(cfg, "test")) == sums
    assert _export(cfg) == exported


def test_an_import_with_three_bad_rows_reports_each_by_row_and_column_and_changes_nothing(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(file="overrides.csv"))
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("vm,nic,ip_configuration,failover_override,test_override\napp01,nic0,0,172.16.1.150,\n")
    before = overrides.read_bytes()
    lines = _export(cfg).splitlines()
    edited = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[1:4] == ["app02", "nic0", "0"]:
            cells[7] = "172.16.1.300"                 # row: not an address
        elif cells[1:4] == ["web01", "nic0", "0"]:
            cells[7] = "10.1.2.3"                     # row: outside west-core-pool
        elif cells[1:4] == ["sql01", "nic0", "1"]:
            cells[2] = "nic5"                         # row: no such NIC
            cells[7] = "192.168.1.60"
        elif cells[1:4] == ["app01", "nic0", "0"]:
            cells[7] = "172.16.1.170"                 # a good change, not applied either
        edited.append(",".join(cells))
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(edited) + "\n")
    row = {name: i for i, line in enumerate(edited, 1) for name in [line.split(",")[1] + "/" + line.split(",")[2]]}

    result = run("addresses", "import", "--csv", str(bad), "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED, result.output
    found = problem_lines(result.stderr)
    assert len(found) == 3, found
    assert any(p.startswith(f"{bad}:{row['app02/nic0']}: failover_override: ") and "172.16.1.300" in p for p in found)
    assert any(p.startswith(f"{bad}:{row['web01/nic0']}: failover_override: ") and "west-core-pool" in p
               and "VM web01 NIC nic0 IP configuration 0" in p for p in found)
    assert any(p.startswith(f"{bad}:{row['sql01/nic5']}: nic: ") and "no NIC named 'nic5'" in p for p in found)
    assert "Nothing was imported" in result.stderr
    assert overrides.read_bytes() == before


def test_import_needs_an_overrides_file_in_the_config_and_the_csv_flag(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path)
    csv_file = tmp_path / "x.csv"
    csv_file.write_text(",".join(FILE_COLUMNS) + "\n")
    result = run("addresses", "import", "--csv", str(csv_file), "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED and "names no address_overrides_file" in result.stderr
    result = run("addresses", "import", str(csv_file), "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED and "--csv" in result.stderr


def test_export_to_a_file_and_an_empty_import_create_nothing(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(file="overrides.csv"))
    out = tmp_path / "out.csv"
    result = run("addresses", "export", "--csv", str(out), "--config", str(cfg))
    assert result.exit_code == EXIT_OK and out.read_text() == _export(cfg)
    result = run("addresses", "import", "--csv", str(out), "--config", str(cfg))
    assert result.exit_code == EXIT_OK and "no change" in result.stdout
    assert not (tmp_path / "overrides.csv").exists()


def test_a_row_overriding_what_the_config_itself_sets_is_refused(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides({"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"},
                                             file="overrides.csv"))
    csv_file = tmp_path / "x.csv"
    csv_file.write_text(",".join(FILE_COLUMNS) + "\napp01,nic0,0,172.16.1.160,\n")
    result = run("addresses", "import", "--csv", str(csv_file), "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED
    assert f"{csv_file}:2: vm: " in result.stderr and "change it there" in result.stderr
    # The same row as the config's is fine: nothing to write.
    csv_file.write_text(",".join(FILE_COLUMNS) + "\napp01,nic0,0,172.16.1.150,\n")
    result = run("addresses", "import", "--csv", str(csv_file), "--config", str(cfg))
    assert result.exit_code == EXIT_OK, result.output


def test_a_bad_overrides_file_stops_every_command_located(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides({"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"},
                                             file="overrides.csv"))
    (tmp_path / "overrides.csv").write_text(",".join(FILE_COLUMNS) + "\napp01,nic0,0,172.16.1.160,\nweb01,,x,,\n")
    result = run("validate", "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED
    found = problem_lines(result.stderr)
    assert any(p.startswith(f"{tmp_path / 'overrides.csv'}:2: vm: ") and "address_overrides[0]" in p for p in found)
    assert any(":3: nic: must not be empty" in p for p in found), found
    assert any(":3: ip_configuration: " in p for p in found), found


# ------------------------------------------------------------------------ CSV form


@pytest.mark.parametrize(("text", "expected"), [
    ("", "1: empty"),
    ("vm,nic,ip_configuration,failover_override\n", "1: test_override: required column is missing"),
    ("vm,nic,ip_configuration,failover_override,test_override,colour\n", "1: colour: unknown column"),
    ("vm,vm,nic,ip_configuration,failover_override,test_override\n", "1: vm: column given twice"),
    ("vm,nic,ip_configuration,failover_override,test_override\na,b,0,10.0.0.1\n", "2: 4 cells, the header has 5"),
    ("vm,nic,ip_configuration,failover_override,test_override\na,b,0,10.0.0.1,\na,b,0,10.0.0.2,\n",
     "3: vm: VM a NIC b IP configuration 0 is given twice (also row 2)"),
    ("vm,nic,ip_configuration,failover_override,test_override\na,b,-1,10.0.0.1,\n", "2: ip_configuration: "),
    ('vm,nic,ip_configuration,failover_override,test_override\n"a,b,0,10.0.0.1,\n', "not valid CSV"),
])
def test_csv_problems_are_located_by_row_and_column(text: str, expected: str) -> None:
    rows, problems = parse_rows("f.csv", text)
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]


def test_a_csv_that_is_not_utf8_is_refused_with_the_byte(tmp_path: Path) -> None:
    from agent.overrides import read_rows

    path = tmp_path / "o.csv"
    path.write_bytes(b"vm,nic\n\xff\n")
    assert "not UTF-8 text (byte 7)" in str(read_rows(path)[1][0])
    assert "not a regular file" in str(read_rows(tmp_path)[1][0])


def test_the_same_address_for_vms_of_two_plans_is_refused(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["recovery_plans"][0]["groups"][1]["vms"] = ["app01"]
        data["recovery_plans"].append({"name": "second", "groups": [{"name": "g", "vms": ["app02"]}]})
        data["address_overrides"] = [{"vm": "app01", "nic": "nic0", "failover": "172.16.1.150"},
                                     {"vm": "app02", "nic": "nic0", "failover": "172.16.1.150"}]
    result = run("validate", "--config", str(demo_copy(tmp_path, edit)))
    assert result.exit_code == EXIT_REFUSED
    [line] = problem_lines(result.stderr)
    assert "address_overrides[1].failover: VM app02 NIC nic0 IP configuration 0: failover override 172.16.1.150 " \
           "in pool west-apps-pool at contoso-west is also the override of VM app01" in line


def test_export_lists_what_it_can_and_says_what_it_cannot(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["recovery_plans"][0]["groups"][1]["vms"].append("ghost")
    result = run("addresses", "export", "--csv", "--config", str(demo_copy(tmp_path, edit)))
    assert result.exit_code == EXIT_OK
    assert "failover of plan contoso-apps is refused" in result.stderr
    assert "VM ghost of plan contoso-apps is not a replicated VM of the sites: not listed" in result.stderr
    assert "contoso-apps,app01,nic0,0,192.168.2.10,,,," in result.stdout


def test_an_oversized_csv_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import overrides

    monkeypatch.setattr(overrides, "MAX_BYTES", 10)
    path = tmp_path / "o.csv"
    path.write_text(",".join(FILE_COLUMNS) + "\n")
    assert "larger than" in str(overrides.read_rows(path)[1][0])


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from agent import overrides

    target = tmp_path / "o.csv"
    target.write_text("old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        overrides.write_atomically(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["o.csv"]


def test_an_import_that_cannot_write_says_so_and_leaves_the_file(tmp_path: Path) -> None:
    cfg = demo_copy(tmp_path, with_overrides(file="missing-dir/overrides.csv"))
    csv_file = tmp_path / "x.csv"
    csv_file.write_text(",".join(FILE_COLUMNS) + "\napp01,nic0,0,172.16.1.160,\n")
    result = run("addresses", "import", "--csv", str(csv_file), "--config", str(cfg))
    assert result.exit_code == EXIT_REFUSED
    assert "cannot write" in result.stderr and "missing-dir" in result.stderr
