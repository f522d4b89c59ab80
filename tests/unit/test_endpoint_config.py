"""The endpoint settings of the config file: each bad combination is refused at load time with
the file, line and key of the endpoint, before anything connects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import Endpoint
from agent.configfile import load_config
from agent.yamlfile import InvalidFileError
from tests.rigs import copy_demo

OK = {"transport": "psrp", "address": "vmm.example", "username": "svc", "credential": "env:X"}


@pytest.mark.parametrize("change, says", [
    ({"transport": "psrp", "address": None}, "needs an address"),
    ({"transport": "local", "address": "vmm.example"}, "takes no address"),
    ({"client_cert": "/c.pem"}, "client_cert and client_key go together"),
    ({"auth": "certificate"}, "auth certificate needs"),
    ({"client_cert": "/c.pem", "client_key": "/k.pem"}, "only with auth certificate"),
    ({"ssl": False, "ca_file": "/ca.pem"}, "ca_file is used only"),
    ({"cert_validation": False, "ca_file": "/ca.pem"}, "ca_file is used only"),
    ({"credential": None, "auth": "ntlm"}, "needs a credential"),
    ({"operation_timeout_s": 0}, "greater than 0"),
    ({"connect_timeout_s": float("inf")}, ""),
    ({"auth": "digest"}, "'certificate' or 'basic'"),
    ({"password": "hunter2"}, "secrets are never written"),
])
def test_a_bad_endpoint_is_refused_at_its_key(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    fields = {k: v for k, v in {**OK, **change}.items() if v is not None}

    def edit(data: dict[str, Any]) -> None:
        data["sites"][0]["vmm"] = fields

    with pytest.raises(InvalidFileError) as caught:
        load_config(copy_demo(tmp_path, edit=edit))
    problem = caught.value.problems[0]
    assert problem.key.startswith("sites[0].vmm"), problem
    assert problem.line is not None and problem.line > 0
    assert says in problem.message


def test_validation_is_on_by_default_and_local_needs_no_address() -> None:
    assert Endpoint(**OK).cert_validation is True and Endpoint(**OK).ssl is True
    assert Endpoint(transport="local").address is None
    ok = Endpoint(transport="psrp", address="h", auth="certificate", client_cert=Path("/c.pem"),
                  client_key=Path("/k.pem"))
    assert ok.client_cert == Path("/c.pem")
