"""Names matched as VMM matches them (agent.domain.matching)."""

from __future__ import annotations

import time

from agent.domain.matching import Names, Nearest, did_you_mean, fold, same_name


def test_names_are_compared_case_insensitively_and_in_one_unicode_form() -> None:
    assert same_name("SQL01", "sql01") and same_name("Straße", "STRASSE") and same_name("Mu\u0308ller", "MÜLLER")
    assert fold("Web 01") == "web 01"
    names = Names([("sql01", 1), ("SQL01", 2), ("web 01", 3)])
    assert names.get("Sql01") == 1 and names.spelling("SQL01") == "sql01"  # the first one wins
    assert "WEB 01" in names and "web01" not in names and 7 not in names
    assert names.get("nope") is None and names.spelling("nope") is None


def test_a_miss_gets_the_nearest_names() -> None:
    assert did_you_mean("sq101", ["sql01", "web01", "app01"]) == "; did you mean 'sql01'?"
    assert did_you_mean("contoso-app", ["contoso-apps", "fabrikam"]) == "; did you mean 'contoso-apps'?"
    assert did_you_mean("zzz", ["sql01"]) == ""
    assert did_you_mean("x", []) == ""


def test_a_miss_among_ten_thousand_similar_names_is_hinted_fast_and_only_so_often() -> None:
    known = [f"vm-{i:05d}.corp" for i in range(10_000)]
    nearest = Nearest(known, budget=3)
    started = time.perf_counter()
    hint = nearest.hint("vm-04242.corp.example")
    assert time.perf_counter() - started < 2  # difflib over all of them took seconds
    assert "'vm-04242.corp'" in hint
    assert nearest.hint("vm-00001.crop") and nearest.hint("vm-00002.crop")
    assert nearest.hint("vm-00003.crop") == ""  # the budget is spent: no more work for this report
