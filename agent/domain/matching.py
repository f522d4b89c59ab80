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
from collections import Counter, defaultdict
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


class Nearest:
    """The did-you-mean over one set of names, indexed once.

    difflib compares a name with every candidate, seconds for one miss among 10,000 similar VM
    names; so candidates are first narrowed to the few sharing the most character pairs with the
    name, and difflib picks among those. A report gets hints for its first ``budget`` misses only:
    a config that misses hundreds of names has a bigger problem than a typo.
    """

    __slots__ = ("_known", "_spelled", "_by_gram", "_budget")

    def __init__(self, known: Iterable[str], budget: int = 20) -> None:
        self._known = list(known)
        self._spelled: dict[str, str] = {}
        self._by_gram: dict[str, list[str]] = defaultdict(list)
        self._budget = budget

    def _index(self) -> None:
        # On the first miss only: a report without one pays nothing.
        for k in self._known:
            self._spelled.setdefault(fold(k), k)
        for folded in self._spelled:
            for gram in _grams(folded):
                self._by_gram[gram].append(folded)
        self._known = []

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        if self._budget <= 0:
            return []
        self._budget -= 1
        if self._known:
            self._index()
        target = fold(name)
        shared: Counter[str] = Counter()
        for gram in _grams(target):
            shared.update(self._by_gram.get(gram, ()))
        candidates = [c for c, _ in shared.most_common(50)]
        return [self._spelled[m] for m in difflib.get_close_matches(target, candidates, n=limit, cutoff=0.6)]

    def hint(self, name: str) -> str:
        """``"; did you mean 'sql01'?"`` (or ``'a' or 'b'``), or ``""`` when nothing is near."""
        near = self.suggestions(name)
        if not near:
            return ""
        return "; did you mean " + " or ".join(repr(n) for n in near) + "?"


def _grams(folded: str) -> set[str]:
    padded = f" {folded} "
    return {padded[i:i + 2] for i in range(len(padded) - 1)}


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """:meth:`Nearest.hint` for a single lookup."""
    return Nearest(known).hint(name)
