"""A WSMan/PSRP server for tests: the unmodified pypsrp (and pywinrm) client talks to it over
real HTTP(S), psrpcore decodes the pipelines, and :func:`tests.remotesim.answer` computes each
answer from the simulated sites. Recipe: ``/work/shared/reference/psrp-test-server.md``.

Routing: the HTTP ``Host`` header names the endpoint (``vmm-hq.sim.test:<port>``); its address
is looked up in :attr:`PsrpTestServer.targets` (``tests.remotesim.targets_for``).

Every pipeline is recorded server side (:attr:`PsrpTestServer.received`): the Host it came to,
the exact script text and the bound parameters as decoded from the wire.

Auth: ``basic`` (the header on every request) and ``ntlm`` (pyspnego's NTLM acceptor, the 401
handshake, then connection-bound auth) -- NTLM over HTTPS only: over HTTP NTLM also needs
WinRM's ``multipart/encrypted`` message wrapping on every request and answer, which is not built.

The WinRS command-shell side (``tests/psrpserver/winrs.py``) answers pywinrm: it accepts only
the fixed wrapper command line of :mod:`agent.drivers.remoting.winrm` and reads the values
document from stdin, like the wrapper does.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psrpcore
import spnego
import spnego.exceptions
from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException, PSInvocationState

from agent.drivers.remoting import PsScript, load_script, script_dir
from agent.drivers.sim import SimWorld
from tests.remotesim import Call, ScriptFailed, Target, answer

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"


@dataclass(frozen=True)
class Received:
    host: str
    script_text: str
    parameters: dict[str, Any]
    transport: str = "psrp"


Extra = Callable[[dict[str, Any]], list[Any]]
"""A test's own script: its outputs; an Exception item is a non-terminating error; raising
:class:`ScriptFailed` is a terminating one."""


def plain(value: Any) -> Any:
    """A psrpcore value (PSString, PSInt, PSList ...) as plain JSON-shaped Python."""
    return json.loads(json.dumps(value))


@dataclass
class _Shell:
    host: str
    pool: Any = None
    out: dict[str | None, list[bytes]] = field(default_factory=dict)
    winrs: Any = None


class PsrpTestServer:
    def __init__(self, *, username: str = "agent", password: str = "s3cret", tls: ssl.SSLContext | None = None,
                 auth: str = "basic") -> None:
        self.username, self.password, self.auth = username, password, auth
        self.world: SimWorld | None = None
        self.targets: dict[str, Target] = {}
        self.extra: dict[str, Extra] = {}
        self.received: list[Received] = []
        self.winrs_command_lines: list[tuple[str, str]] = []
        self.drop_commands = 0
        """The next N Command requests have their connection closed with no answer."""
        self.fault_commands: list[tuple[int, str]] = []
        """The next Command requests answer these WSMan faults (code, message), one each."""
        self.hold_output = False
        """Keep pipelines running (empty Receive answers): what a host stuck in a call looks like."""
        self.shells: dict[str, _Shell] = {}
        self.opened: list[str] = []
        """Every PSRP shell (runspace pool) ever created, in order."""
        self.lock = threading.Lock()
        self.scripts = {load_script(n).text: load_script(n) for n in shipped_scripts()}
        server = self
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(server))
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="psrp-test-server", daemon=True)

    def start(self) -> PsrpTestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def scripts_received(self) -> list[Received]:
        return list(self.received)

    # ------------------------------------------------------------------ PSRP glue
    def feed(self, sh: _Shell, data: bytes) -> None:
        sh.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, None))
        while (ev := sh.pool.next_event()) is not None:
            if isinstance(ev, psrpcore.CreatePipelineEvent):
                self.run_pipeline(sh, sh.pool.pipeline_table[ev.pipeline_id], ev.pipeline)
        self.flush(sh)

    def flush(self, sh: _Shell) -> None:
        while (p := sh.pool.data_to_send()) is not None:
            key = str(p.pipeline_id).upper() if p.pipeline_id else None
            sh.out.setdefault(key, []).append(p.data)

    def run_pipeline(self, sh: _Shell, pipe: Any, ps: Any) -> None:
        pipe.start()
        if len(ps.commands) != 1 or not ps.commands[0].is_script:
            return self.fail(pipe, "OneScriptOnly", f"expected one script, got {len(ps.commands)} commands")
        cmd = ps.commands[0]
        if any(n is None for n, _ in cmd.parameters):
            return self.fail(pipe, "PositionalArgument", "positional arguments are not used by the agent")
        params = {str(n): plain(v) for n, v in cmd.parameters}
        text = str(cmd.command_text)
        self.received.append(Received(sh.host, text, params))
        try:
            outputs = self.outputs(sh.host, text, params)
        except ScriptFailed as failed:
            return self.fail(pipe, failed.error_id, failed.message)
        for item in outputs:
            if isinstance(item, Exception):
                pipe.write_error(NETException(Message=str(item)), ErrorCategoryInfo(Reason=type(item).__name__),
                                 fully_qualified_error_id=getattr(item, "error_id", type(item).__name__))
            else:
                pipe.write_output(item)
        pipe.complete()

    @staticmethod
    def fail(pipe: Any, error_id: str, message: str) -> None:
        # psrpcore has no public "fail": this is what a terminating error sends (PipelineState Failed).
        pipe._change_state(PSInvocationState.Failed, ErrorRecord(
            Exception=NETException(Message=message), CategoryInfo=ErrorCategoryInfo(),
            FullyQualifiedErrorId=error_id))

    def outputs(self, host: str, text: str, params: dict[str, Any]) -> list[Any]:
        """What the script ``text`` prints at ``host``: a test's extra script, or the shipped
        script's answer from the simulated sites."""
        if text in self.extra:
            return self.extra[text](params)
        script = self.scripts.get(text)
        if script is None:
            raise ScriptFailed("UnknownScript", f"no shipped script has this text ({text[:60]!r}...)")
        return [json.dumps(self.answer(host, script, params))]

    def answer(self, host: str, script: PsScript, params: dict[str, Any]) -> dict[str, Any]:
        target = self.targets.get(host)
        if target is None:
            raise ScriptFailed("UnknownHost", f"no simulated endpoint {host!r} (known: {sorted(self.targets)})")
        if self.world is None:
            raise ScriptFailed("NoWorld", "the test server has no simulated world")
        return answer(Call(self.world, target, script, params))


def shipped_scripts() -> list[str]:
    root = script_dir()
    return sorted(str(p.relative_to(root).with_suffix("")).replace("\\", "/") for p in root.glob("*/*.ps1"))


def _handler_class(server: PsrpTestServer) -> type[BaseHTTPRequestHandler]:
    from tests.psrpserver.winrs import WinrsShell, is_winrs

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not self.authenticated():
                return None
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            req = ET.fromstring(body)
            try:
                with server.lock:
                    resp = self.dispatch(req, host)
            except _Fault as f:
                return self.reply(500, envelope(req, fault(f.message, f.code)))
            except _Drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            except Exception as exc:  # loud: a WSMan fault naming what the fake could not do
                return self.reply(500, envelope(req, fault(repr(exc))))
            self.reply(200, envelope(req, resp))
            return None

        ntlm: Any = None
        ntlm_done = False

        def authenticated(self) -> bool:
            """Basic: the header on every request. NTLM: the 401 handshake, after which the
            connection is authenticated (WinRM's connection-bound auth; over HTTPS only, since
            HTTP would also need WinRM's message encryption, which this server does not do)."""
            header = self.headers.get("Authorization") or ""
            if server.auth == "basic":
                expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                if header == expected:
                    return True
                self.reply(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
                return False
            if self.ntlm_done and not header:
                return True
            if not header.startswith("NTLM "):
                self.reply(401, b"", {"WWW-Authenticate": "NTLM"})
                return False
            token = base64.b64decode(header[5:])
            if token[8:12] == b"\x01\x00\x00\x00" or self.ntlm is None:  # a NEGOTIATE message starts anew
                self.ntlm, self.ntlm_done = spnego.server(protocol="ntlm"), False
            try:
                out = self.ntlm.step(token)
            except spnego.exceptions.SpnegoError:
                self.ntlm = None
                self.reply(401, b"", {"WWW-Authenticate": "NTLM"})
                return False
            if self.ntlm.complete:
                self.ntlm_done = True
                return True
            self.reply(401, b"", {"WWW-Authenticate": "NTLM " + base64.b64encode(out or b"").decode()})
            return False

        def reply(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def dispatch(self, req: ET.Element, host: str) -> ET.Element | None:
            action = req.findtext("s:Header/wsa:Action", "", NS)
            body = req.find("s:Body", NS)
            assert body is not None
            sid = req.findtext("s:Header/wsman:SelectorSet/wsman:Selector[@Name='ShellId']", None, NS)
            if action == ACTION + "Create":
                if is_winrs(req):
                    new = str(uuid.uuid4()).upper()
                    server.shells[new] = _Shell(host, winrs=WinrsShell(server, host))
                    return created(new)
                shell_el = body.find("rsp:Shell", NS)
                assert shell_el is not None
                new = shell_el.get("ShellId", "").upper()
                sh = server.shells[new] = _Shell(host, pool=psrpcore.ServerRunspacePool())
                server.opened.append(new)
                server.feed(sh, base64.b64decode(body.findtext("rsp:Shell/pwsh:creationXml", "", NS)))
                return created(new)
            sh = server.shells[str(sid).upper()]
            if action == ACTION + "Delete":
                del server.shells[str(sid).upper()]
                return None
            if sh.winrs is not None:
                return sh.winrs.dispatch(action, body)
            if action == SHELL + "Command":
                if server.fault_commands:
                    raise _Fault(*server.fault_commands.pop(0))
                if server.drop_commands > 0:
                    server.drop_commands -= 1
                    raise _Drop()
                line = body.find("rsp:CommandLine", NS)
                assert line is not None
                cid = line.get("CommandId", "").upper()
                psrpcore.ServerPipeline(sh.pool, uuid.UUID(cid))
                server.feed(sh, base64.b64decode(line.findtext("rsp:Arguments", "", NS)))
                resp = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
                ET.SubElement(resp, f"{{{NS['rsp']}}}CommandId").text = cid
                return resp
            if action == SHELL + "Send":
                stream = body.find("rsp:Send/rsp:Stream", NS)
                assert stream is not None
                server.feed(sh, base64.b64decode(stream.text or ""))
                return None
            if action == SHELL + "Receive":
                desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
                wanted = desired.get("CommandId") if desired is not None else None
                key = wanted.upper() if wanted else None
                resp = ET.Element(f"{{{NS['rsp']}}}ReceiveResponse")
                if key is not None and server.hold_output:
                    time.sleep(0.02)
                    return resp
                for data in sh.out.pop(key, []):
                    s = ET.SubElement(resp, f"{{{NS['rsp']}}}Stream", Name="stdout")
                    if key:
                        s.set("CommandId", key)
                    s.text = base64.b64encode(data).decode()
                return resp
            if action == SHELL + "Signal":
                signal = body.find("rsp:Signal", NS)
                cid = signal.get("CommandId", "") if signal is not None else ""
                code = body.findtext("rsp:Signal/rsp:Code", "", NS)
                pipe = sh.pool.pipeline_table.get(uuid.UUID(cid)) if cid else None
                if pipe is not None and code.endswith("ctrl_c"):
                    server.hold_output = False
                    pipe.stop()
                    server.flush(sh)
                elif pipe is not None:
                    pipe.close()
                return ET.Element(f"{{{NS['rsp']}}}SignalResponse")
            raise NotImplementedError(f"action {action}")

    return Handler


class _Drop(Exception):
    pass


class _Fault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def created(shell_id: str) -> ET.Element:
    rc = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
    ET.SubElement(rc, f"{{{NS['wsa']}}}Address").text = "http://localhost/wsman"
    ref = ET.SubElement(rc, f"{{{NS['wsa']}}}ReferenceParameters")
    uri = ET.SubElement(ref, f"{{{NS['wsman']}}}ResourceURI")
    uri.text = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
    selectors = ET.SubElement(ref, f"{{{NS['wsman']}}}SelectorSet")
    sel = ET.SubElement(selectors, f"{{{NS['wsman']}}}Selector", Name="ShellId")
    sel.text = shell_id
    shell = ET.SubElement(rc, f"{{{NS['rsp']}}}Shell")
    ET.SubElement(shell, f"{{{NS['rsp']}}}ShellId").text = shell_id
    return rc


WSMANFAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"


def fault(reason: str, wsman_code: int | None = None) -> ET.Element:
    f = ET.Element(f"{{{NS['s']}}}Fault")
    code = ET.SubElement(ET.SubElement(f, f"{{{NS['s']}}}Code"), f"{{{NS['s']}}}Value")
    code.text = "s:Receiver"
    ET.SubElement(ET.SubElement(f, f"{{{NS['s']}}}Reason"), f"{{{NS['s']}}}Text").text = reason
    if wsman_code is not None:
        detail = ET.SubElement(f, f"{{{NS['s']}}}Detail")
        wf = ET.SubElement(detail, f"{{{WSMANFAULT}}}WSManFault", Code=str(wsman_code), Machine="sim")
        ET.SubElement(wf, f"{{{WSMANFAULT}}}Message").text = reason
    return f


def envelope(req: ET.Element, body_child: ET.Element | None) -> bytes:
    env = ET.Element(f"{{{NS['s']}}}Envelope")
    hdr = ET.SubElement(env, f"{{{NS['s']}}}Header")
    ET.SubElement(hdr, f"{{{NS['wsa']}}}RelatesTo").text = req.findtext("s:Header/wsa:MessageID", "", NS)
    ET.SubElement(hdr, f"{{{NS['wsa']}}}MessageID").text = "uuid:" + str(uuid.uuid4()).upper()
    body = ET.SubElement(env, f"{{{NS['s']}}}Body")
    if body_child is not None:
        body.append(body_child)
    return ET.tostring(env)
