"""The service files under service/ agree with the agent: the systemd unit's ExecStart is a
`failover-agent serve` command line the CLI accepts, its stop and restart settings are the
graceful ones (and systemd itself finds nothing wrong with it), and the Windows install script
writes the registry values, the service name and the class the service code reads."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent import winservice
from agent.cli import app

REPO = Path(__file__).parents[2]
UNIT = REPO / "service" / "failover-agent.service"
INSTALL = REPO / "service" / "install-service.ps1"
THIN = REPO / "service" / "failover_agent_service.py"


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_execstart_is_a_serve_invocation_the_cli_accepts() -> None:
    [exec_start] = _unit()["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/failover-agent/bin/failover-agent"
    assert "serve" in argv
    config = argv[argv.index("--config") + 1]
    assert Path(config).is_absolute(), "no working-directory-relative config for a service"
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: failover-agent serve" in result.output


def test_the_unit_stops_gracefully_and_restarts_only_what_a_restart_can_fix() -> None:
    service = _unit()["Service"]
    assert service["Type"] == ["simple"]
    assert service["KillSignal"] == ["SIGTERM"], "SIGTERM is what serve stops gracefully on"
    assert int(service["TimeoutStopSec"][0]) >= 120, "time for the step in hand before SIGKILL"
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"], "a bad config is not restarted"
    assert "StateDirectory" in service and "User" in service


def test_systemd_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit's path is where the install puts the venv, absent here, and verify checks that the
    # command exists: any executable stands in (the command line is checked by the test above).
    unit = tmp_path / "failover-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/failover-agent/bin/failover-agent", sys.executable))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_install_script_writes_what_the_service_reads() -> None:
    script = INSTALL.read_text(encoding="utf-8")
    assert f"[string] $ServiceName = '{winservice.SERVICE_NAME}'" in script
    for value in ("ConfigPath", "LogLevel"):
        assert f"-Name '{value}'" in script, value
    assert re.search(r"\$serviceKey = \"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\\$ServiceName\"", script)
    tree = ast.parse(THIN.read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert "FailoverAgentService" in classes
    assert "'.FailoverAgentService'" in script and "'failover_agent_service.py'" in script
    assert "host-exe" in script and '"host-exe"' in THIN.read_text()
    assert "('{0}[service]' -f $SourcePath)" in script, "installs the service extra (pywin32)"


def test_the_install_script_restarts_on_failure_and_on_a_failing_exit_code() -> None:
    script = INSTALL.read_text(encoding="utf-8")
    assert re.search(r"sc\.exe failure \$ServiceName reset= 86400 actions= restart/\d+/restart/\d+/restart/\d+", script)
    assert "sc.exe failureflag $ServiceName 1" in script
    assert "SetAccessRuleProtection($true, $false)" in script and "Set-Acl -LiteralPath" in script


def test_pywin32_is_imported_only_by_the_thin_service_module() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "agent").rglob("*.py")
                 if re.search(r"^\s*(import|from) (win32\w*|servicemanager|pywintypes)\b", p.read_text(), re.M)]
    assert offenders == []
    assert re.search(r"^import win32serviceutil$", THIN.read_text(), re.M)
