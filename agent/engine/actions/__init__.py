"""Step actions: each turns one journalled step into batched port calls, one module per outside
system (``vmm``, ``hyperv``, ``routes``, ``dns``) plus the pauses and scripts between groups
(``flow``). Importing this package registers every action in :data:`ACTIONS`."""

from agent.engine.actions import dns, flow, hyperv, routes, vmm
from agent.engine.actions.base import ACTIONS, Action, ActionContext

__all__ = ["ACTIONS", "Action", "ActionContext", "dns", "flow", "hyperv", "routes", "vmm"]
