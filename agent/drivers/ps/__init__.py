"""The PowerShell-backed drivers: each port method is one shipped script run at one endpoint.

Every call goes through :meth:`PsDriver.call` with the script's parameters as *literal keyword
arguments*, so a test can read each call site and prove it binds exactly the names of the
script's ``param()`` block (``tests/unit/test_powershell_call_sites.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config import Endpoint
from agent.drivers.remoting import Remote, RemoteItem, load_script, parse_answer
from agent.errors import AgentError, make_error

__all__ = ["PsDriver", "item_error"]


def item_error(item: RemoteItem, by_error_id: Mapping[str, str] | None = None) -> AgentError:
    """The agent error of a failed item: the script's own ``code``, else the first entry of
    ``by_error_id`` whose key starts the item's ``FullyQualifiedErrorId``, else
    ``remote_item_error``; the id and message are kept for the operator."""
    code = item.error_code
    if code is None and item.error_id is not None:
        code = next((mapped for prefix, mapped in (by_error_id or {}).items() if item.error_id.startswith(prefix)),
                    None)
    return make_error(code or "remote_item_error", "permanent", item.error_message or "the remote side refused",
                      key=item.key, fully_qualified_error_id=item.error_id)


class PsDriver:
    """What every PowerShell-backed driver holds: a transport and the endpoint it talks to."""

    def __init__(self, remote: Remote, endpoint: Endpoint, *, timeout_s: float | None = None) -> None:
        self.remote = remote
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def call(self, script_name: str, /, **parameters: Any) -> list[RemoteItem]:
        """Run ``script_name`` here with ``parameters`` bound; its items."""
        script = load_script(script_name)
        answer = self.remote.run(self.endpoint, script, parameters, timeout_s=self.timeout_s)
        return parse_answer(script, answer)

    def call_at(self, endpoint: Endpoint, script_name: str, /, **parameters: Any) -> list[RemoteItem]:
        """Like :meth:`call`, at another endpoint of the same transport (a site's other host)."""
        script = load_script(script_name)
        return parse_answer(script, self.remote.run(endpoint, script, parameters, timeout_s=self.timeout_s))
