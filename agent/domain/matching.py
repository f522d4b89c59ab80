"""Names matched as VMM matches them: case-insensitively, with a did-you-mean on a miss.

VMM and Hyper-V compare object names without regard to case (``Get-SCVirtualMachine -Name
SQL01`` finds ``sql01``; the VM-name documentation of Virtual Server, Hyper-V's predecessor,
says so outright: "MyVM" and "myvm" refer to the same virtual machine). So a recovery plan that
says ``SQL01`` means the inventory's ``sql01``, and everything the agent writes afterwards uses
the inventory's spelling. A name that matches nothing gets the nearest names as a hint.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def fold(name: str) -> str:
    """The form two names are compared in: NFC, then Unicode case folding."""
    return unicodedata.normalize("NFC", name).casefold()


def same_name(a: str, b: str) -> bool:
    return fold(a) == fold(b)


class Names(Generic[T]):
    """Values by name, looked up case-insensitively. The first value of a folded name wins (VMM
    does not let two objects of a kind differ only in case)."""

    __slots__ = ("_by_fold", "_spelling")

    def __init__(self, items: Iterable[tuple[str, T]] = ()) -> None:
        self._by_fold: dict[str, T] = {}
        self._spelling: dict[str, str] = {}
        for name, value in items:
            key = fold(name)
            self._by_fold.setdefault(key, value)
            self._spelling.setdefault(key, name)

    def get(self, name: str) -> T | None:
        return self._by_fold.get(fold(name))

    def spelling(self, name: str) -> str | None:
        """The name as the source spells it (None: no such name)."""
        return self._spelling.get(fold(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and fold(name) in self._by_fold


def suggestions(name: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """The known names nearest to ``name`` (difflib, compared folded), best first."""
    spelled: dict[str, str] = {}
    for k in known:
        spelled.setdefault(fold(k), k)
    return [spelled[m] for m in difflib.get_close_matches(fold(name), list(spelled), n=limit, cutoff=0.6)]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'sql01'?"`` (or ``'a' or 'b'``), or ``""`` when nothing is near."""
    near = suggestions(name, known)
    if not near:
        return ""
    return "; did you mean " + " or ".join(repr(n) for n in near) + "?"
