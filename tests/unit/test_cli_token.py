"""``failover-agent token create``: a token shown once, and the config entry that admits it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from agent.api.auth import Tokens, token_hash
from agent.configapi import Api
from tests.rigs import copy_demo, run_cli


def test_the_printed_entry_admits_the_printed_token_with_its_scopes(tmp_path: Path) -> None:
    result = run_cli("token", "create", "--name", "orchestrator", "--scope", "operate", "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["sha256"] == token_hash(made["token"]) and made["scopes"] == ["operate"]

    config = copy_demo(tmp_path, edit=lambda d: d.update(api={"tokens": [
        {k: made[k] for k in ("name", "sha256", "scopes")}]}))
    assert run_cli("validate", "--config", str(config)).exit_code == 0
    api = Api.model_validate(yaml.safe_load(config.read_text())["api"])
    caller = Tokens(api).caller(made["token"])
    assert caller is not None and caller.name == "orchestrator" and caller.may("read") and not caller.may("admin")
    assert Tokens(api).caller(made["token"] + "x") is None


def test_the_text_form_says_it_is_shown_once_and_gives_the_line(tmp_path: Path) -> None:
    result = run_cli("token", "create", "--name", "site-admins", "--scope", "read", "--scope", "admin")
    assert result.exit_code == 0
    assert "shown once" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if "sha256:" in ln)
    assert "scopes: [read, admin]" in line and "name: site-admins" in line


def test_an_unknown_scope_is_refused_naming_the_known_ones() -> None:
    result = run_cli("token", "create", "--name", "x", "--scope", "plan")
    assert result.exit_code == 2
    assert "unknown scope plan" in result.output and "operate" in result.output
