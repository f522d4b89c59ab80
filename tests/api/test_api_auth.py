"""Every route but health needs a token (401 without), and the scope its OpenAPI operation
publishes (403 with a lesser one); the matrix is built from the served OpenAPI document, so a
new route is covered the moment it exists."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from agent.configapi import SCOPES
from tests.apiserver import ApiServer

PUBLIC = {("get", "/v1/health")}
EXPECTED_SCOPE = {"get": "read"}
"""Reads need read; everything else operate, but a preview (it changes nothing)."""
READ_ONLY_POSTS = {"/v1/plans/{name}/preview"}


def routes(api: ApiServer) -> list[tuple[str, str, str | None]]:
    spec = httpx.get(api.url + "/openapi.json").json()
    return [(method, path, op.get("x-required-scope"))
            for path, methods in spec["paths"].items() for method, op in methods.items()]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_but_health_needs_a_token(api: ApiServer) -> None:
    found = routes(api)
    assert len(found) >= 15
    with api.client(None) as anonymous:
        for method, path, _scope in found:
            r = anonymous.request(method, concrete(path))
            if (method, path) in PUBLIC:
                assert r.status_code == 200
                continue
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["code"] == "unauthenticated"
        wrong = anonymous.get("/v1/plans", headers={"Authorization": "Bearer fa_not-a-token"})
        assert wrong.status_code == 401 and "not one of this agent's tokens" in wrong.json()["detail"]


def test_every_route_needs_its_published_scope(api: ApiServer) -> None:
    for method, path, scope in routes(api):
        if (method, path) in PUBLIC:
            continue
        expected = "read" if method == "get" or path in READ_ONLY_POSTS else "operate"
        assert scope == expected, (method, path)
        for lesser in SCOPES[:SCOPES.index(scope)]:
            with api.client(lesser) as client:
                r = client.request(method, concrete(path))
                assert r.status_code == 403, (method, path, lesser)
                assert r.json()["code"] == "forbidden" and r.json()["needed"] == scope
        with api.client(scope) as client:  # an empty body: 422 or 404 at worst, never a scope refusal
            assert client.request(method, concrete(path), json={}).status_code not in (401, 403), (method, path)


def test_admin_may_do_what_operate_may(api: ApiServer) -> None:
    with api.client("admin") as client:
        assert client.get("/v1/operations").status_code == 200
        assert client.post("/v1/operations", json={"kind": "test_failover", "plan": "nope"}).status_code == 404


def test_repeated_failures_are_slowed_and_a_good_token_is_not(api: ApiServer) -> None:
    with api.client(None) as anonymous:
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            assert anonymous.get("/v1/plans", headers={"Authorization": "Bearer guess"}).status_code == 401
            times.append(time.monotonic() - t0)
    # Delays of 0, 0.25, 0.5, 1 and 2 s (api.failed_auth_delay_s), on top of the call's own time.
    assert times[4] >= 2.0 and times[4] - times[0] >= 1.5, times
    with api.client("read") as client:
        t0 = time.monotonic()
        assert client.get("/v1/operations").status_code == 200
        assert time.monotonic() - t0 < times[4] - 1.5, "a good token is not slowed by others' failures"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", ""])
def test_malformed_authorization_is_401(api: ApiServer, header: str) -> None:
    with api.client(None) as anonymous:
        assert anonymous.get("/v1/operations", headers={"Authorization": header}).status_code == 401
