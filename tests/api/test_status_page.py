"""The status page as a site admin uses it, on a real agent served at a free port of 127.0.0.1:
signing in through the form (the cookie's flags, over HTTP and over TLS), what a read-only and an
operate session see and may do, the CSRF and origin checks on every button, the drill report
behind the same session, and values from the sites that try to be markup staying text -- with
httpx, and in headless Chromium (``test-artifacts/status-page.png``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from agent.api.auth import Caller
from agent.api.pages import AUDIT_SHOWN, PAGE_POLICY, current_step
from agent.api.sessions import COOKIE, MAX_SESSIONS, SESSION_TTL_S, Sessions, safe_next
from tests.apiserver import ApiServer, serving
from tests.browser import artifact, chromium_page
from tests.integration.test_drill_report import HOSTILE_VM, Text
from tests.rigs import CONFIG_DIR, DEMO_PLAN, Rig, Templates, copy_demo

MANUAL = "Check that SQL Server on sql01"
HOSTILE_INSTRUCTION = "Check </div><script>alert('instruction')</script><b onmouseover=alert(6)>sql01</b>"


def start(api: ApiServer, kind: str = "test_failover") -> str:
    with api.client("operate") as client:
        r = client.post("/v1/operations", json={"kind": kind, "plan": DEMO_PLAN})
        assert r.status_code == 202, r.text
        op_id: str = r.json()["id"]
        return op_id


def paused(api: ApiServer, op_id: str) -> dict:
    with api.client("read") as client:
        op = api.wait(client, op_id)
    assert op["status"] == "waiting_for_manual_action", op
    return op


@contextmanager
def signed_in(api: ApiServer, scope: str, **kwargs: object) -> Iterator[httpx.Client]:
    """A browser-like client signed in through the form with a token of ``scope``."""
    with httpx.Client(base_url=api.url, timeout=30, **kwargs) as client:  # type: ignore[arg-type]
        r = client.post("/login", data={"token": api.tokens[scope], "next": "/"})
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        yield client


def csrf_of(client: httpx.Client) -> str:
    r = client.get("/")
    assert r.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert found is not None
    return found.group(1)


def shown(html: str) -> str:
    parsed = Text()
    parsed.feed(html)
    return parsed.text


def status_of(api: ApiServer, op_id: str) -> str:
    with api.client("read") as client:
        status: str = client.get(f"/v1/operations/{op_id}").json()["status"]
        return status


# ------------------------------------------------------------------------------ sign-in


def test_without_a_session_every_page_route_sends_the_browser_to_sign_in(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        r = browser.get("/")
        assert (r.status_code, r.headers["location"]) == (303, "/login")
        assert browser.get("/status").headers["location"] == "/login?next=/status"
        r = browser.get(f"/reports/{op_id}")
        assert r.headers["location"] == f"/login?next=/reports/{op_id}"
        for action in ("resume", "cancel"):
            r = browser.post(f"/status/operations/{op_id}/{action}", data={"csrf": "x", "confirm": "yes"})
            assert (r.status_code, r.headers["location"]) == (303, "/login")
        # A bearer token is the API's credential, not the page's; a made-up cookie is no session.
        r = browser.get("/", headers={"Authorization": f"Bearer {api.tokens['admin']}"})
        assert r.status_code == 303
    with httpx.Client(base_url=api.url, timeout=30, cookies={COOKIE: "forged"}) as forged:
        assert forged.get("/").status_code == 303
    assert status_of(api, op_id) == "waiting_for_manual_action", "nothing was resumed or cancelled"


PUBLIC_PAGES = {("GET", "/login"), ("POST", "/login")}


def page_routes(api: ApiServer) -> list[tuple[str, str, str | None]]:
    """Every page route with the scope its ``require_page`` dependency asks, from the router the
    app serves them by (a new one is in the matrix below the moment it exists); none is in the
    OpenAPI document."""
    from fastapi.routing import APIRoute

    from agent.api.pages import router

    def needs(route: APIRoute) -> str | None:
        names = [d.call.__name__ for d in route.dependant.dependencies if d.call is not None]
        return next((n.removeprefix("require_page_") for n in names if n.startswith("require_page_")), None)

    paths = set(httpx.get(api.url + "/openapi.json").json()["paths"])
    found = sorted((method, route.path, needs(route)) for route in router.routes if isinstance(route, APIRoute)
                   for method in route.methods)
    assert not paths & {path for _, path, _ in found}
    assert all(needs is not None for m, p, needs in found if (m, p) not in PUBLIC_PAGES)
    return found


def test_the_page_routes_matrix_no_session_read_and_operate(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    found = page_routes(api)
    assert len(found) >= 8, found
    scope = {(m, p.replace("{op_id}", op_id)): needs for m, p, needs in found}
    assert {needs for _, _, needs in found} == {None, "read", "operate"}
    assert all(needs == "operate" for m, p, needs in found if m == "POST" and p.startswith("/status/"))
    concrete = [(m, p.replace("{op_id}", op_id)) for m, p, _ in found if (m, p) not in PUBLIC_PAGES]
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        for method, path in concrete:
            r = anonymous.request(method, path, data={"csrf": "x"} if method == "POST" else None)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)
    with signed_in(api, "read") as reader:
        csrf = csrf_of(reader)
        for method, path in concrete:
            if path == "/logout":
                continue
            r = reader.request(method, path, data={"csrf": csrf} if method == "POST" else None)
            assert r.status_code == (403 if scope[(method, path)] == "operate" else 200), (method, path)
    assert status_of(api, op_id) == "waiting_for_manual_action"
    with signed_in(api, "operate") as operator:
        for method, path in concrete:
            if method == "GET":
                assert operator.get(path).status_code == 200, path
            elif path != "/logout":
                r = operator.post(path, data={"csrf": csrf_of(operator)})
                assert r.status_code == 303 and r.headers["location"] == f"/#{op_id}", path
    with api.client("read") as client:
        assert api.wait(client, op_id)["status"] == "succeeded", "Resume resumed; Cancel unticked did nothing"


def test_signing_in_sets_an_httponly_strict_session_cookie_that_is_not_the_token(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        form = browser.get("/login")
        assert form.status_code == 200 and 'type="password"' in form.text
        assert form.headers["content-security-policy"] == PAGE_POLICY
        r = browser.post("/login", data={"token": api.tokens["read"], "next": "/"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "max-age", "samesite"} <= flags and "secure" not in flags, cookie
        assert "samesite=strict" in cookie.lower() and f"max-age={SESSION_TTL_S}" in cookie.lower()
        session_id = browser.cookies[COOKIE]
        assert api.tokens["read"] not in cookie and len(session_id) >= 40
        page = browser.get("/")
        assert page.status_code == 200 and "read-caller" in page.text
        # The cookie opens the pages, never the API.
        assert browser.get("/v1/operations").status_code == 401
        assert browser.get("/login").headers["location"] == "/", "signed in already"

        # Another sign-in is another session: the id is never reused.
        with signed_in(api, "read") as other:
            assert other.cookies[COOKIE] != session_id


def test_a_wrong_token_is_refused_slowly_and_sets_no_cookie(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        for _ in range(3):
            r = browser.post("/login", data={"token": "fa_guess", "next": "/"})
            assert r.status_code == 401 and "not one of this agent's tokens" in shown(r.text)
            assert "set-cookie" not in r.headers
        # The bearer path and the form count the same failures from one client.
        r = browser.get("/v1/plans", headers={"Authorization": "Bearer fa_guess"})
        assert r.status_code == 401
        assert browser.get("/").status_code == 303


def test_signing_out_ends_the_session_on_the_server(api: ApiServer) -> None:
    with signed_in(api, "operate") as browser:
        session_id = browser.cookies[COOKIE]
        assert browser.post("/logout", data={"csrf": "wrong"}).status_code == 403, "sign-out is a form too"
        r = browser.post("/logout", data={"csrf": csrf_of(browser)})
        assert (r.status_code, r.headers["location"]) == (303, "/login")
        assert COOKIE not in browser.cookies
    with httpx.Client(base_url=api.url, timeout=30, cookies={COOKIE: session_id}) as replayed:
        assert replayed.get("/").status_code == 303, "the old cookie opens nothing"


def test_after_signing_in_the_browser_goes_back_where_it_was_sent_from_but_only_to_this_agent(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        r = browser.post("/login", data={"token": api.tokens["read"], "next": f"/reports/{op_id}"})
        assert r.headers["location"] == f"/reports/{op_id}"
        r = browser.get(r.headers["location"])
        assert r.status_code == 200 and "Drill report" in r.text
    for target, expected in ((None, "/"), ("https://evil.example/", "/"), ("//evil.example/x", "/"),
                             ("/\\evil.example", "/"), ("/reports/op-1?x=<y>", "/"), ("/status", "/status")):
        assert safe_next(target) == expected, target


def test_sessions_expire_and_stay_bounded() -> None:
    now = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    caller = Caller("ann", frozenset({"read"}))
    first, session = sessions.create(caller)
    assert sessions.get(first) is session and sessions.get(None) is None
    now[0] += 61
    assert sessions.get(first) is None, "past its 12 hours (here 60 s), a session is gone"
    second, _ = sessions.create(caller)
    sessions.end(None)
    assert sessions.get(second) is not None
    sessions.end(second)
    assert sessions.get(second) is None
    ids = [sessions.create(caller)[0] for _ in range(MAX_SESSIONS + 5)]
    assert sessions.get(ids[0]) is None and sessions.get(ids[-1]) is not None
    assert len(sessions._by_digest) == MAX_SESSIONS


def _self_signed(where: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_over_tls_the_session_cookie_is_secure(new_rig: Callable[..., Rig], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with serving(new_rig(), tls=(cert, key)) as api:
        assert api.url.startswith("https://")
        with httpx.Client(base_url=api.url, timeout=30, verify=ssl.create_default_context(cafile=cert)) as browser:
            r = browser.post("/login", data={"token": api.tokens["read"], "next": "/"})
            assert r.status_code == 303
            assert "secure" in {p.strip().lower() for p in r.headers["set-cookie"].split(";")}
            assert browser.get("/").status_code == 200


# ---------------------------------------------------------------- read-only and operate


def test_a_read_session_sees_everything_and_no_button_and_cannot_post_one(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with signed_in(api, "read") as browser:
        page = browser.get("/")
        assert page.status_code == 200
        for name, value in (("content-security-policy", PAGE_POLICY), ("x-frame-options", "DENY"),
                            ("cache-control", "no-store"), ("referrer-policy", "same-origin")):
            assert page.headers[name] == value
        text = shown(page.text)
        assert "Waiting for you (1)" in text and MANUAL in text
        assert "Resuming needs a token with operate" in text and "read only" in text
        assert "/resume" not in page.text and "/cancel" not in page.text and 'class="resume"' not in page.text
        assert re.search(r'http-equiv="refresh" content="\d+"', page.text), "the page keeps itself current"
        # The plan, its state and what can start; pools; the reservations the drill holds; audit.
        # Mid-drill the plan is mixed: sql01's test VM runs, the later groups' do not yet.
        assert re.search(rf"{DEMO_PLAN} mixed sql01: test failover running app01: protected .*cleanup_test",
                         text), text
        assert "Static IP pools" in text and "contoso-west" in text
        assert "192.168.1.201" in text, "the test reservation of sql01"
        assert "operation.create" in text or "operation." in text

        csrf = csrf_of(browser)  # the sign-out form's token: valid, but the scope is missing
        r = browser.post(f"/status/operations/{op_id}/resume", data={"csrf": csrf})
        assert r.status_code == 403 and "lacks scope 'operate'" in shown(r.text)
        assert r.headers["content-security-policy"] == PAGE_POLICY
        r = browser.post(f"/status/operations/{op_id}/cancel", data={"csrf": csrf, "confirm": "yes"})
        assert r.status_code == 403
    assert status_of(api, op_id) == "waiting_for_manual_action"


def test_operate_resumes_a_paused_drill_from_the_page_and_the_page_says_so(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with signed_in(api, "operate") as browser:
        page = browser.get("/")
        assert f'id="resume-{op_id}"' in page.text and f'id="cancel-{op_id}"' in page.text
        r = browser.post(f"/status/operations/{op_id}/resume", data={"csrf": csrf_of(browser)})
        assert (r.status_code, r.headers["location"]) == (303, f"/#{op_id}")
        with api.client("read") as client:
            assert api.wait(client, op_id)["status"] == "succeeded"
        assert current_step(api.served.engine.view(op_id)) is None, "a finished one stands nowhere"
        page = shown(browser.get("/").text)
        assert f"{op_id} resumed by operate-caller." in page
        assert "Waiting for you (0)" in page and "resumed by" not in shown(browser.get("/").text), "said once"
        audit = shown(browser.get("/").text)
        assert "api:operate-caller" in audit, "the audit trail names who resumed it"

        # Resuming what no longer waits is refused by the engine, and the page says why.
        browser.post(f"/status/operations/{op_id}/resume", data={"csrf": csrf_of(browser)})
        assert f"{op_id} was not resumed:" in shown(browser.get("/").text)


def test_operate_cancels_after_confirming_on_a_page_that_does_not_reload(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with signed_in(api, "operate") as browser:
        assert f'href="/status/operations/{op_id}/cancel"' in browser.get("/").text
        confirm = browser.get(f"/status/operations/{op_id}/cancel")
        assert confirm.status_code == 200 and confirm.headers["content-security-policy"] == PAGE_POLICY
        assert "http-equiv" not in confirm.text, "no reload drops the admin's decision"
        text = shown(confirm.text)
        assert f"Cancel test failover of plan {DEMO_PLAN}?" in text and MANUAL in text
        assert 'name="confirm" value="yes"' in confirm.text

        r = browser.post(f"/status/operations/{op_id}/cancel", data={"csrf": csrf_of(browser)})
        assert r.status_code == 303
        assert "was not cancelled: confirm it on its Cancel page" in shown(browser.get("/").text)
        assert status_of(api, op_id) == "waiting_for_manual_action"
        browser.post(f"/status/operations/{op_id}/cancel", data={"csrf": csrf_of(browser), "confirm": "yes"})
        with api.client("read") as client:
            assert api.wait(client, op_id)["status"] == "cancelled"
        assert f"{op_id} cancelled by operate-caller" in shown(browser.get("/").text)
        browser.post(f"/status/operations/{op_id}/cancel", data={"csrf": csrf_of(browser), "confirm": "yes"})
        assert f"{op_id} was not cancelled:" in shown(browser.get("/").text)
        r = browser.get("/status/operations/op-000000000000/cancel")
        assert r.headers["location"] == "/" and "op-000000000000: " in shown(browser.get("/").text)


def test_a_button_without_the_session_s_csrf_token_or_from_another_site_changes_nothing(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    url = f"/status/operations/{op_id}/resume"
    with signed_in(api, "operate") as browser:
        csrf = csrf_of(browser)
        for data, headers in (({}, {}), ({"csrf": "not-the-token"}, {}), ({"csrf": csrf[:-1]}, {}),
                              ({"csrf": csrf}, {"Origin": "https://evil.example"}),
                              ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"})):
            r = browser.post(url, data=data, headers=headers)
            assert r.status_code == 403, (data, headers)
        assert browser.post(url, json={"csrf": csrf}).status_code == 403, "only the page's urlencoded forms"
        assert browser.post(url, data={"csrf": csrf, "pad": "x" * 9000}).status_code == 403
        # Signing in is refused from another site's page too (no session to fixate on a victim).
        r = browser.post("/login", data={"token": api.tokens["admin"]}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert status_of(api, op_id) == "waiting_for_manual_action"
        r = browser.post(url, data={"csrf": csrf}, headers={"Origin": api.url, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303
    with api.client("read") as client:
        assert api.wait(client, op_id)["status"] == "succeeded"


def test_the_drill_report_opens_with_the_session_and_links_to_reports_it_can_open(api: ApiServer) -> None:
    test_id = start(api)
    paused(api, test_id)
    with signed_in(api, "operate") as browser:
        browser.post(f"/status/operations/{test_id}/resume", data={"csrf": csrf_of(browser)})
        with api.client("read") as client:
            api.wait(client, test_id)
        cleanup = start(api, "cleanup_test")
        with api.client("read") as client:
            assert api.wait(client, cleanup)["status"] == "succeeded"
        page = browser.get("/")
        assert f'href="/reports/{test_id}"' in page.text and f'href="/reports/{cleanup}"' in page.text
        report = browser.get(f"/reports/{test_id}")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "script-src" not in report.headers["content-security-policy"]
        assert "default-src 'none'" in report.headers["content-security-policy"]
        assert report.headers["x-frame-options"] == "DENY"
        assert f'href="/reports/{cleanup}"' in report.text, "the follow-up is a link the session opens"
        csv = browser.get(f"/reports/{test_id}", params={"format": "csv"})
        assert csv.status_code == 200 and csv.text.startswith("operation,record")
        assert browser.get("/reports/op-000000000000").status_code == 404


def test_the_audit_shows_the_last_entries_newest_first(api: ApiServer) -> None:
    op_id = start(api)
    paused(api, op_id)
    with api.client("operate") as client:
        for i in range(AUDIT_SHOWN + 5):
            assert client.post(f"/v1/operations/{op_id}/notes", json={"text": f"note {i}"}).status_code == 201
    with signed_in(api, "read") as browser:
        html = browser.get("/").text
    audit = html[html.index('id="audit"'):]
    assert audit.count("<tr>") == AUDIT_SHOWN + 1  # the header row, then the entries
    assert f"the last {AUDIT_SHOWN} entries" in audit and audit.count("operation.note") == AUDIT_SHOWN


def test_a_site_that_does_not_answer_blanks_its_sections_not_the_page(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig()
    with serving(rig) as api:
        op_id = start(api)
        paused(api, op_id)
        rig.world.inject({"call": "vmm.read_inventory", "target": "contoso-west", "fault": "transient"})
        with signed_in(api, "read") as browser:
            page = browser.get("/")
    assert page.status_code == 200
    text = shown(page.text)
    assert len(re.findall(r"Could not be read: [^.]*vmm.read_inventory on contoso-west: unreachable", text)) == 2, text
    assert MANUAL in text, "the pauses come from the store and are still shown"
    assert "192.168.1.201" in text, "and so do the reservations"


# ------------------------------------------------------------------------ hostile values


def hostile_templates(tmp_path: Path) -> Templates:
    """The demo with app02 renamed to markup and a manual instruction that tries to end its
    element and run a script."""

    def edit(data: dict) -> None:
        for group in data["recovery_plans"][0]["groups"]:
            group["vms"] = [HOSTILE_VM if vm == "app02" else vm for vm in group["vms"]]
            for after in group.get("after", []):
                if "manual" in after:
                    after["manual"]["instruction"] = HOSTILE_INSTRUCTION
        data["dns"].setdefault("hostnames", {})[HOSTILE_VM] = "app02.corp.contoso.example"

    inventory = yaml.safe_load((CONFIG_DIR / "demo-inventory.yaml").read_text())
    for site in inventory["sites"]:
        for vm in site.get("vms", []):
            if vm["name"] == "app02":
                vm["name"] = HOSTILE_VM
    return Templates.build(copy_demo(tmp_path / "hostile", edit=edit, inventory=yaml.safe_dump(inventory)))


@pytest.fixture
def hostile_api(new_rig: Callable[..., Rig], tmp_path: Path) -> Iterator[ApiServer]:
    with serving(new_rig(templates=hostile_templates(tmp_path))) as server:
        yield server


def test_hostile_names_and_instructions_are_shown_as_text(hostile_api: ApiServer) -> None:
    op_id = start(hostile_api)
    paused(hostile_api, op_id)
    with signed_in(hostile_api, "operate") as browser:
        html = browser.get("/").text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b onmouseover" not in html
    text = shown(html)
    assert HOSTILE_INSTRUCTION in text and HOSTILE_VM in text


# ------------------------------------------------------------------------------ Chromium


def _sign_in(page, api: ApiServer, scope: str) -> None:
    page.goto(api.url + "/")
    assert page.url.endswith("/login"), "no session: the sign-in form"
    page.fill("#token", api.tokens[scope])
    page.click("#sign-in")
    page.wait_for_url(api.url + "/")


@pytest.mark.chromium
def test_in_chromium_an_admin_signs_in_sees_the_drill_pause_and_resumes_it(api: ApiServer) -> None:
    with chromium_page(height=1000) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _sign_in(page, api, "operate")
        assert "protected" in page.inner_text(f"#plan-{DEMO_PLAN} .state")
        assert page.context.cookies()[0]["httpOnly"] is True

        op_id = start(api)  # as an orchestrator would, over the API
        # The page reloads itself: no click, and the pause with its instruction appears.
        page.wait_for_selector(f"#pause-{op_id}", timeout=20000)
        assert MANUAL in page.inner_text(f"#pause-{op_id} .instruction")
        assert page.inner_text(f"#{op_id} .percent").endswith("%")
        page.screenshot(path=str(artifact("status-page.png")), full_page=True)

        page.click(f"#resume-{op_id}")
        page.wait_for_url(re.compile(r".*/#" + op_id))
        assert f"{op_id} resumed by operate-caller." in page.inner_text(".flash")
        with api.client("read") as client:
            assert api.wait(client, op_id)["status"] == "succeeded"
        page.reload()
        page.wait_for_selector(f"#recent a[href='/reports/{op_id}']")
        assert "test failover running" in page.inner_text(f"#plan-{DEMO_PLAN} .state")
        page.click(f"#recent a[href='/reports/{op_id}']")
        assert page.title().startswith(f"Drill report {op_id}")
        assert dialogs == []


@pytest.mark.chromium
def test_in_chromium_a_read_session_has_no_button_and_hostile_values_run_nothing(hostile_api: ApiServer) -> None:
    op_id = start(hostile_api)
    paused(hostile_api, op_id)
    with chromium_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _sign_in(page, hostile_api, "read")
        assert page.inner_text(f"#pause-{op_id} .instruction") == HOSTILE_INSTRUCTION
        assert f"{HOSTILE_VM}: protected" in page.inner_text(f"#plan-{DEMO_PLAN} .vms")
        assert page.locator("button.resume, button.cancel").count() == 0
        page.hover(f"#pause-{op_id} .instruction")
        page.wait_for_timeout(300)
        assert page.locator("script, img, b").count() == 0
        assert dialogs == [], "no value of the sites ran as script"
