"""Errors only the simulator raises."""

from __future__ import annotations

from agent.errors import PermanentError


class InjectedFault(PermanentError):
    """A permanent failure injected by a fault rule (``simulation.faults``), not a modelled refusal.

    Carries ``rule`` (the rule's index) so a test can tell which rule fired.
    """

    code = "injected_fault"
