"""The failover-agent Windows service: pywin32's shell around :mod:`agent.winservice`.

Only the Service Control Manager's callbacks and the registry read live here; what the service
does (the serve invocation, stopping as SIGTERM does, exit codes, the event log) is in
``agent.winservice``, tested on any OS. ``install-service.ps1`` copies this file into the
agent's virtual environment and registers pywin32's ``pythonservice.exe`` host with
``PythonClass`` = ``<venv>\\failover_agent_service.FailoverAgentService``.

    python failover_agent_service.py debug     # run in this console (Ctrl-C stops it)
    python failover_agent_service.py host-exe  # print the service host exe (installing it in the venv)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import winreg
from logging.handlers import NTEventLogHandler

import servicemanager
import win32api
import win32service
import win32serviceutil

from agent import winservice


class FailoverAgentService(win32serviceutil.ServiceFramework):
    _svc_name_ = winservice.SERVICE_NAME
    _svc_display_name_ = winservice.DISPLAY_NAME
    _svc_description_ = winservice.DESCRIPTION

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self._host = winservice.ServiceHost(args[1:], _parameters(self._svc_name_))

    def GetAcceptedControls(self) -> int:
        # Pre-shutdown gives the agent up to 3 minutes at a host shutdown, not the few seconds of a
        # plain shutdown notification: time for the step in hand.
        return int(super().GetAcceptedControls()) | win32service.SERVICE_ACCEPT_PRESHUTDOWN

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=int(winservice.STOP_BOUND_S * 1000))
        self._host.stop()

    def SvcShutdown(self) -> None:
        self.SvcStop()

    def SvcOtherEx(self, control: int, event_type: int, data: object) -> None:
        if control == win32service.SERVICE_CONTROL_PRESHUTDOWN:
            self.SvcStop()

    def SvcRun(self) -> None:
        outcome = self._host.run(
            running=lambda: self.ReportServiceStatus(win32service.SERVICE_RUNNING),
            stopping=lambda hint_ms: self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=hint_ms),
        )
        # pywin32's host reports SERVICE_STOPPED after this returns: with a Win32 error code (which
        # runs the restart actions) when it raises, with 0 when it returns.
        if outcome.restart:
            raise ServiceFailed(f"failover-agent stopped with exit code {outcome.code}: {outcome.message}")


class ServiceFailed(Exception):
    """Ends SvcRun so that the SCM restarts the service."""


def _parameters(service: str) -> dict[str, object]:
    """The values install-service.ps1 wrote, read-only (pywin32's GetServiceCustomOption asks for
    write access, which the service account does not have on its own key)."""
    path = rf"SYSTEM\CurrentControlSet\Services\{service}\Parameters"
    try:
        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ)
    except FileNotFoundError:
        return {}
    found: dict[str, object] = {}
    with key:
        for name in ("ConfigPath", "LogLevel"):
            with contextlib.suppress(FileNotFoundError):
                found[name] = winreg.QueryValueEx(key, name)[0]
    return found


def host_exe() -> str:
    """pywin32's service host, placed in this environment by pywin32 itself, with the Python DLL
    beside it: a service does not see the installing user's PATH. Run elevated (the install
    script), it also registers the event log source the service writes under."""
    NTEventLogHandler(winservice.SERVICE_NAME).close()
    exe = win32serviceutil.LocatePythonServiceExe()
    python_dll = win32api.GetModuleFileName(sys.dllhandle)
    for dll in (python_dll, os.path.join(os.path.dirname(python_dll), "python3.dll")):
        target = os.path.join(os.path.dirname(exe), os.path.basename(dll))
        if os.path.isfile(dll) and not os.path.isfile(target):
            shutil.copy2(dll, target)
    return str(exe)


if __name__ == "__main__":
    if len(sys.argv) == 1:  # started by the SCM through a frozen host
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(FailoverAgentService)
        servicemanager.StartServiceCtrlDispatcher()
    elif sys.argv[1:] == ["host-exe"]:
        print(host_exe())
    else:
        win32serviceutil.HandleCommandLine(FailoverAgentService)
