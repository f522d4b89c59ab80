"""The BIND harness's skip-or-fail rule: skip locally without named, fail under CI=true."""

from __future__ import annotations

import pytest

from tests import bind


@pytest.fixture
def no_named(monkeypatch):
    monkeypatch.setattr(bind, "named_path", lambda: None)


def test_missing_named_skips_locally_with_the_reason(no_named):
    with pytest.raises(pytest.skip.Exception, match="named is not installed"):
        bind.require_named({})


@pytest.mark.parametrize("ci", ["true", "TRUE", " true "])
def test_missing_named_fails_under_ci(no_named, ci):
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        bind.require_named({"CI": ci})


def test_ci_false_still_skips(no_named):
    with pytest.raises(pytest.skip.Exception):
        bind.require_named({"CI": "false"})


def test_generated_keys_do_not_print_their_secret():
    key = bind.TsigKey.generate("k", "hmac-sha512")
    assert key.secret and key.secret not in repr(key)
    assert f'secret "{key.secret}"' in key.conf()


def test_free_port_is_free_for_tcp_and_udp():
    import socket

    port = bind.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", port))
        u.bind(("127.0.0.1", port))
