"""schemathesis against the served OpenAPI document: whatever a client sends, the agent never
answers 5xx, and every answer matches the schema (status codes, content types, bodies) it
publishes. (schemathesis' own pytest plugin does not load under this pytest: each API
operation's strategy is driven by hypothesis here instead.)

Generated values alone would almost never name an operation or plan that exists, so half the
cases get real ones: a real test failover, waiting at its manual step, and the demo's plan."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.apiserver import ApiServer

EXAMPLES = 15


def test_no_server_errors_and_answers_match_the_schema(api: ApiServer) -> None:
    with api.client("operate") as client:
        op_id = client.post("/v1/operations", json={"kind": "test_failover", "plan": "contoso-apps"}).json()["id"]
        api.wait(client, op_id)
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    real = random.Random(1)
    seen: Counter[tuple[str, str, int]] = Counter()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def exercise(case: Any) -> None:
                if real.random() < 0.5:
                    params = case.path_parameters or {}
                    if "op_id" in params:
                        params["op_id"] = op_id
                    if "name" in params:
                        params["name"] = "contoso-apps"
                    if isinstance(case.body, dict) and "plan" in case.body:
                        case.body["plan"] = "contoso-apps"
                response = case.call(base_url=api.url, headers=headers, timeout=30)
                seen[(case.method, case.path, response.status_code)] += 1
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)
                # A repeated scalar query parameter counts as "invalid" to schemathesis; the
                # server takes the last, as every framework does: not a defect of the agent.
                case.validate_response(response, excluded_checks=[negative_data_rejection, positive_data_acceptance])

            try:
                exercise()
            except Unsatisfiable:
                if mode == GenerationMode.POSITIVE:
                    raise  # a route without parameters has no invalid input: only then
    statuses = {status for (_m, _p, status) in seen}
    assert {200, 404, 422} <= statuses, seen
    assert any(p == "/v1/operations/{op_id}" and s == 200 for (_m, p, s) in seen), seen
