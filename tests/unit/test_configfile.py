"""Loading the config file: where it comes from, and a report of every problem at once."""

from __future__ import annotations

import copy
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import agent
from agent import configfile
from agent.config import AgentConfig
from agent.configfile import (
    ENV_CONFIG,
    ENV_DATA_DIR,
    LoadedConfig,
    demo_dir,
    load_config,
    resolve_config_path,
)
from agent.domain.model import Inventory, Isolation, VmNetwork
from agent.domain.validation import check_config_against_inventory
from agent.yamlfile import InvalidFileError, _LineIndex
from tests.rigs import config_fixture

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.yaml"


pytestmark = pytest.mark.usefixtures("cli_env")


def problems_of(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidFileError) as caught:
        load_config(path)
    return [(p.line, p.key, p.message) for p in caught.value.problems]


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    shutil.copy(REPO / "config" / "demo-inventory.yaml", tmp_path)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- where from


def test_the_demo_loads_with_a_per_user_data_dir(tmp_path: Path) -> None:
    loaded = load_config(None)
    assert loaded.source == "demo" and loaded.is_demo
    assert loaded.path == DEMO.resolve()
    assert loaded.data_dir == (tmp_path / "data").resolve()
    assert loaded.simulator_inventory == (REPO / "config" / "demo-inventory.yaml").resolve()
    assert loaded.simulator_state == loaded.data_dir / configfile.SIM_STATE_NAME
    assert loaded.config.plan(configfile.DEMO_PLAN) is not None


def test_demo_data_dir_follows_xdg_state_home_without_the_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_DATA_DIR)
    monkeypatch.setattr(configfile, "_windows", lambda: False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert configfile.default_data_dir_for_demo() == (tmp_path / "state" / "failover-agent" / "demo").resolve()
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))  # what Path.home() reads on Windows
    assert configfile.default_data_dir_for_demo() == (
        tmp_path / "home" / ".local" / "state" / "failover-agent" / "demo"
    ).resolve()


def test_demo_data_dir_on_windows_is_under_localappdata(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_DATA_DIR)
    monkeypatch.setattr(configfile, "_windows", lambda: True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert configfile.default_data_dir_for_demo() == (
        tmp_path / "AppData" / "Local" / "failover-agent" / "demo"
    ).resolve()


def test_option_beats_environment_beats_demo(monkeypatch, tmp_path: Path) -> None:
    assert resolve_config_path(None) == (DEMO.resolve(), "demo")
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "env.yaml"))
    assert resolve_config_path(None) == ((tmp_path / "env.yaml").resolve(), "env")
    assert resolve_config_path(tmp_path / "opt.yaml") == ((tmp_path / "opt.yaml").resolve(), "option")


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    data = demo_data()
    data["agent"]["data_dir"] = "state"
    data["simulator"]["state"] = "sim/world.json"
    path = write(tmp_path, data)
    loaded = load_config(path)
    assert loaded.source == "option"
    assert loaded.data_dir == (tmp_path / "state").resolve()
    assert loaded.simulator_state == (tmp_path / "sim" / "world.json").resolve()
    assert loaded.simulator_inventory == (tmp_path / "demo-inventory.yaml").resolve()
    assert loaded.line_of("recovery_plans[0].groups[1].name") is not None


def test_simulator_state_defaults_into_the_data_dir(tmp_path: Path) -> None:
    data = demo_data()
    data["agent"]["data_dir"] = "var"
    loaded = load_config(write(tmp_path, data))
    assert loaded.simulator_state == (tmp_path / "var" / configfile.SIM_STATE_NAME).resolve()


def test_the_site_template_is_a_valid_config() -> None:
    loaded = load_config(REPO / "config" / "site-template.yaml")
    cfg = loaded.config
    assert cfg.simulator is None
    assert {s.vmm.transport for s in cfg.sites} == {"psrp"}
    assert {d.kind for d in cfg.dns.servers} == {"rfc2136"}
    refs = [s.vmm.credential for s in cfg.sites] + [d.tsig.secret for d in cfg.dns.servers]
    assert {r.scheme for r in refs} == {"env", "file"}


def test_the_demo_ships_in_the_wheel_as_agent_demo() -> None:
    # The source checkout reads config/; a wheel carries the same files as agent/demo/.
    assert demo_dir() == (REPO / "config").resolve() or demo_dir() == Path(agent.__file__).parent / "demo"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["package-dir"]["agent.demo"] == "config"
    assert "*.yaml" in setuptools["package-data"]["agent.demo"]
    for name in ("demo.yaml", "demo-inventory.yaml", "site-template.yaml"):
        assert (REPO / "config" / name).is_file()


# ------------------------------------------------------------------------ located problems


def test_unknown_key_is_located_and_suggests_the_right_one(tmp_path: Path) -> None:
    [(line, key, message)] = problems_of(config_fixture("unknown-key.yaml", tmp_path))
    assert (line, key) == (9, "sites[1].hyperv_host")
    assert "unknown key" in message and "'hyperv_hosts'" in message


def test_plain_text_secrets_are_refused_without_echoing_them(tmp_path: Path) -> None:
    path = config_fixture("plaintext-password.yaml", tmp_path)
    with pytest.raises(InvalidFileError) as caught:
        load_config(path)
    found = [(p.line, p.key) for p in caught.value.problems]
    assert found == [(12, "sites[0].vmm.credential"), (21, "dns.servers[0].tsig.secret")]
    assert all("env:" in p.message and "plain-text" in p.message for p in caught.value.problems)
    text = str(caught.value) + repr(caught.value.to_dict())
    assert "Winter2024!" not in text and "c3VwZXItc2VjcmV0LXRzaWcta2V5" not in text


def test_a_secret_under_an_unknown_key_is_pointed_at_the_reference_field(tmp_path: Path) -> None:
    data = demo_data()
    data["sites"][0]["vmm"]["password"] = "hunter2"
    [(_, key, message)] = problems_of(write(tmp_path, data))
    assert key == "sites[0].vmm.password"
    assert "'credential'" in message and "env:" in message and "hunter2" not in message


def test_several_problems_of_every_kind_come_in_one_report(tmp_path: Path) -> None:
    found = problems_of(config_fixture("several-problems.yaml", tmp_path))
    assert [(line, key) for line, key, _ in found] == [
        (4, "agent.mode"),
        (14, "sites[1].dns_servers[0]"),
        (19, "network_mappings[0].tset_network"),
        (24, "subnets[0].announcements.contoso-west[0].router"),
        (37, "recovery_plans[0].groups[0].after[0].script.timeout_s"),
    ]
    messages = {key: msg for _, key, msg in found}
    assert "'network-only' or 'full'" in messages["agent.mode"]
    assert "'dns-contso'" in messages["sites[1].dns_servers[0]"]
    assert "did you mean 'test_network'" in messages["network_mappings[0].tset_network"]
    assert "unknown router 'rtr-wst'" in messages["subnets[0].announcements.contoso-west[0].router"]


def test_cross_references_are_located_after_a_dropped_list_item(tmp_path: Path) -> None:
    # network_mappings[0] is broken (dropped for the cross-reference check); the dangling site of
    # network_mappings[2] must still be reported at index 2, on its own line.
    data = demo_data()
    data["network_mappings"][0]["ip_strategy"] = "keep"
    data["network_mappings"][2]["target"]["site"] = "contoso-north"
    path = write(tmp_path, data)
    found = problems_of(path)
    keys = [key for _, key, _ in found]
    assert keys == ["network_mappings[0].ip_strategy", "network_mappings[2].target.site"]
    lines = path.read_text().splitlines()
    line = found[1][0]
    assert "contoso-north" in lines[line - 1]


def test_union_errors_are_reported_once(tmp_path: Path) -> None:
    data = demo_data()
    data["recovery_plans"][0]["groups"][1]["after"][0]["script"]["parameters"]["Url"] = ["a", "list"]
    [(_, key, message)] = problems_of(write(tmp_path, data))
    assert key == "recovery_plans[0].groups[1].after[0].script.parameters.Url"
    assert message == "should be text, a whole number or true/false"


def test_names_explain_their_rule_in_words(tmp_path: Path) -> None:
    data = demo_data()
    data["recovery_plans"][0]["name"] = "apps\x1b[2J"
    [(_, key, message)] = problems_of(write(tmp_path, data))
    assert key == "recovery_plans[0].name"
    assert "may not hold control characters" in message and "U+001B" in message


def test_names_take_what_vmm_takes_quotes_spaces_and_unicode(tmp_path: Path) -> None:
    data = demo_data()
    data["recovery_plans"][0]["name"] = "-apps o'brien ünïcødé"
    data["recovery_plans"][0]["groups"][0]["name"] = '"tier 1"_db'
    loaded = load_config(write(tmp_path, data))
    assert loaded.config.plan("-APPS O'BRIEN ÜNÏCØDÉ") is loaded.config.recovery_plans[0]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  site: [contoso-west\nsites: []\n", encoding="utf-8")
    [(line, key, message)] = problems_of(path)
    assert key == "" and line == 3 and "not valid YAML" in message


def test_a_file_that_is_not_a_mapping_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- agent\n- sites\n", encoding="utf-8")
    [(_, key, message)] = problems_of(path)
    assert key == "" and "mapping of sections" in message


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    [(line, key, message)] = problems_of(tmp_path / "nope.yaml")
    assert line is None and "cannot read" in message


def leaf_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaf_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaf_paths(v, (*path, i))


def test_field_errors_never_bring_invented_cross_reference_problems() -> None:
    """Break every part of the demo config in turn (delete it, or replace it with garbage): the
    cross-reference problems reported beside the field errors may only be references to names
    that the breakage removed from the file, never a problem that is not there."""

    base = demo_data()
    no_lines = _LineIndex(None)  # lines are not what this is about; skipping YAML keeps it fast
    checked = 0
    for path in list(leaf_paths(base)):
        if not path:
            continue
        for mode in ("delete", "garbage"):
            data = copy.deepcopy(base)
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            removed = configfile._strings(parent[path[-1]])
            if mode == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = [[1]]
            try:
                AgentConfig.model_validate(data)
                continue  # still valid (an optional key deleted)
            except ValidationError as exc:
                errors = [e for e in exc.errors(include_url=False) if not configfile._is_cross(e)]
            if not errors:
                continue
            checked += 1
            for problem in configfile._cross_problems_despite("c.yaml", data, no_lines, errors):
                assert any(repr(name) in problem.message for name in removed), (
                    f"breaking {path} ({mode}) reported an invented problem: {problem}"
                )
    assert checked > 150


# ------------------------------------------------------------------- against the inventory


def test_inventory_issues_are_located_in_the_config(tmp_path: Path) -> None:
    loaded = load_config(config_fixture("missing-network.yaml", tmp_path))
    inventory = Inventory(
        vm_networks=(
            VmNetwork(name="east-apps", site="contoso-east", logical_network="ln", isolation=Isolation.WNV),
            VmNetwork(name="west-apps", site="contoso-west", logical_network="ln", isolation=Isolation.WNV),
        )
    )
    issues = check_config_against_inventory(loaded.config, inventory)
    [problem] = loaded.located(issues).problems
    assert (problem.line, problem.key) == (11, "network_mappings[0].target.vm_network")
    assert "'west-nowhere' does not exist at site contoso-west" in problem.message
    assert problem.file == str(loaded.path)


def test_a_config_matching_the_inventory_passes(tmp_path: Path) -> None:
    loaded = load_config(config_fixture("missing-network.yaml", tmp_path))
    fixed = LoadedConfig(
        loaded.config.model_copy(update={"network_mappings": []}),
        loaded.path, loaded.source, loaded.data_dir, loaded.simulator_inventory, loaded.simulator_state,
    )
    assert check_config_against_inventory(fixed.config, Inventory()) == []
