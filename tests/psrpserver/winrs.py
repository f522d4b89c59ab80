"""The WinRS (cmd shell) side of the test server, for pywinrm: it runs only the agent's fixed
wrapper command line and does, in Python, what the wrapper documents: read the base64 values
document from stdin, run the named script with the values, print the base64 result."""

from __future__ import annotations

import base64
import json
import time
import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from agent.drivers.remoting.wrapper import ARGUMENTS
from tests.remotesim import ScriptFailed

if TYPE_CHECKING:
    from tests.psrpserver.server import PsrpTestServer

RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"


def is_winrs(req: ET.Element) -> bool:
    uri = req.findtext("{http://www.w3.org/2003/05/soap-envelope}Header/"
                       "{http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd}ResourceURI", "")
    return uri == CMD_URI


class WinrsShell:
    def __init__(self, server: PsrpTestServer, host: str) -> None:
        self.server, self.host = server, host
        self.commands: dict[str, dict[str, Any]] = {}
        self.command_lines: list[tuple[str, str]] = []

    def dispatch(self, action: str, body: ET.Element) -> ET.Element | None:
        name = action.rsplit("/", 1)[-1]
        if name == "Command":
            line = body.find(f"{{{RSP}}}CommandLine")
            assert line is not None
            command, arguments = line.findtext(f"{{{RSP}}}Command", ""), line.findtext(f"{{{RSP}}}Arguments", "")
            self.server.winrs_command_lines.append((command, arguments))
            cid = str(uuid.uuid4()).upper()
            self.commands[cid] = {"stdin": b"", "done": False, "ok": (command, arguments) == (
                "powershell.exe", " ".join(ARGUMENTS))}
            resp = ET.Element(f"{{{RSP}}}CommandResponse")
            ET.SubElement(resp, f"{{{RSP}}}CommandId").text = cid
            return resp
        if name == "Send":
            stream = body.find(f"{{{RSP}}}Send/{{{RSP}}}Stream")
            assert stream is not None
            cmd = self.commands[stream.get("CommandId", "").upper()]
            cmd["stdin"] += base64.b64decode(stream.text or "")
            cmd["done"] = stream.get("End") == "true"
            return None
        if name == "Receive":
            desired = body.find(f"{{{RSP}}}Receive/{{{RSP}}}DesiredStream")
            cid = (desired.get("CommandId") if desired is not None else "") or ""
            resp = ET.Element(f"{{{RSP}}}ReceiveResponse")
            if self.server.hold_output:  # still running
                time.sleep(0.02)
                ET.SubElement(resp, f"{{{RSP}}}CommandState", CommandId=cid, State=f"{RSP}/CommandState/Running")
                return resp
            stdout, code = self.run(self.commands[cid.upper()])
            out = ET.SubElement(resp, f"{{{RSP}}}Stream", Name="stdout", CommandId=cid)
            out.text = base64.b64encode(stdout).decode()
            state = ET.SubElement(resp, f"{{{RSP}}}CommandState", CommandId=cid,
                                  State=f"{RSP}/CommandState/Done")
            ET.SubElement(state, f"{{{RSP}}}ExitCode").text = str(code)
            return resp
        if name == "Signal":
            return ET.Element(f"{{{RSP}}}SignalResponse")
        raise NotImplementedError(f"winrs action {action}")

    def run(self, cmd: dict[str, Any]) -> tuple[bytes, int]:
        if not cmd["ok"]:
            return b"'this fake runs only the agent wrapper' is not recognized", 1
        doc = json.loads(base64.b64decode(cmd["stdin"]).decode("utf-8"))
        result: dict[str, Any] = {"output": None, "errors": [], "failed": None}
        text, params = doc["script"], doc["parameters"]
        self.server.received.append(_received(self.host, text, params))
        try:
            outputs = self.server.outputs(self.host, text, params)
            result["errors"] = [{"id": getattr(o, "error_id", type(o).__name__), "message": str(o)}
                                for o in outputs if isinstance(o, Exception)]
            values = [o for o in outputs if not isinstance(o, Exception)]
            result["output"] = str(values[-1]) if values else None
        except ScriptFailed as failed:
            result["failed"] = {"id": failed.error_id, "message": failed.message}
        return base64.b64encode(json.dumps(result).encode("utf-8")), 0


def _received(host: str, text: str, params: dict[str, Any]) -> Any:
    from tests.psrpserver.server import Received

    return Received(host, text, params, transport="winrm")
