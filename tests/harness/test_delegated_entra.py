"""The fake Entra's delegated sign-in flows, driven by the real msal.PublicClientApplication."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import browser
from harness.client import HarnessControlError
from harness.tokens import unverified_claims
from harness.up import Harness
from tests.harness.delegated import (
    DELEGATE,
    PUBLIC_CLIENT_ID,
    REDIRECT,
    SENDER,
    SMTP_SEND,
    auth_code_flow,
    hidden_fields,
    http,
    public_app,
    sign_in,
    token_url,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


@pytest.fixture
def fast(harness: Harness) -> Harness:
    """Device codes polled every second (the default is Microsoft's 5)."""
    harness.control.apply_scenario(patch={"delegated": {"device_code_interval_s": 1}})
    return harness


def _approve_when_pending(h: Harness, user: str, *, decline: bool = False) -> threading.Thread:
    """Answer the first pending device code from another thread, as the person at the browser would."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                codes = h.control.device_codes()
                if codes:
                    answer = h.control.decline_device_code if decline else h.control.approve_device_code
                    answer(codes[0]["user_code"], user)
                    return
                time.sleep(0.05)
            raise TimeoutError("no pending device code")
        except BaseException as exc:  # surfaced by the test through the thread's errors
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def _error_code(result: dict[str, Any]) -> int | None:
    codes = result.get("error_codes") or []
    return codes[0] if codes else None


def _post_token(h: Harness, **form: str) -> httpx.Response:
    with http(h) as client:
        return client.post(token_url(h), data={"client_id": PUBLIC_CLIENT_ID, **form})


# -- device code ------------------------------------------------------------------------------------------


def test_device_flow_approved_through_the_control_api(fast: Harness) -> None:
    app = public_app(fast)
    flow = app.initiate_device_flow(["Mail.Send", "Mail.ReadBasic"])
    assert len(flow["user_code"]) == 9
    assert flow["verification_uri"] == "https://microsoft.com/devicelogin"
    assert flow["interval"] == 1 and flow["expires_in"] == 900
    assert flow["user_code"] in flow["message"]
    thread = _approve_when_pending(fast, SENDER)
    result = app.acquire_token_by_device_flow(flow)
    thread.join()
    assert "access_token" in result, result
    assert set(result["scope"].split()) == {"Mail.Send", "Mail.ReadBasic", "offline_access", "openid", "profile"}
    claims = unverified_claims(result["access_token"]).raw
    user = fast.scenario.user(SENDER)
    assert user is not None
    assert set(claims["scp"].split()) == {"Mail.Send", "Mail.ReadBasic"}
    assert (claims["upn"], claims["unique_name"], claims["oid"], claims["sub"]) == (SENDER, SENDER, user.object_id, user.object_id)
    assert (claims["idtyp"], claims["appid"], claims["azp"], claims["appidacr"]) == ("user", PUBLIC_CLIENT_ID, PUBLIC_CLIENT_ID, "0")
    assert claims["aud"] == GRAPH_APP_ID and "roles" not in claims
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info == {"uid": user.object_id, "utid": fast.scenario.tenant_id}
    [account] = app.get_accounts(username=SENDER.upper())
    assert account["home_account_id"] == f"{user.object_id}.{fast.scenario.tenant_id}"
    id_claims = result["id_token_claims"]
    assert id_claims["aud"] == PUBLIC_CLIENT_ID and id_claims["preferred_username"] == SENDER
    assert id_claims["iss"] == f"{fast.authority}/v2.0" and id_claims["ver"] == "2.0"


def test_device_flow_declined(fast: Harness) -> None:
    app = public_app(fast)
    flow = app.initiate_device_flow(["Mail.Send"])
    thread = _approve_when_pending(fast, SENDER, decline=True)
    result = app.acquire_token_by_device_flow(flow)
    thread.join()
    assert result["error"] == "authorization_declined"


def test_device_code_pending_expired_unknown_and_one_time(fast: Harness) -> None:
    app = public_app(fast)
    flow = app.initiate_device_flow(["Mail.Send"])
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": flow["device_code"]}
    pending = _post_token(fast, **grant)
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending" and pending.json()["error_codes"] == [70016]
    fast.control.approve_device_code(flow["user_code"].lower(), SENDER)
    assert _post_token(fast, **grant).status_code == 200
    again = _post_token(fast, **grant)
    assert again.json()["error"] == "bad_verification_code"
    assert _post_token(fast, **{**grant, "device_code": "garbled"}).json()["error"] == "bad_verification_code"

    fast.control.apply_scenario(patch={"delegated": {"device_code_expires_s": 0}})
    expired = app.initiate_device_flow(["Mail.Send"])
    answer = _post_token(fast, **{**grant, "device_code": expired["device_code"]})
    assert answer.json()["error"] == "expired_token" and answer.json()["error_codes"] == [70020]
    with pytest.raises(HarnessControlError) as refused:
        fast.control.approve_device_code(expired["user_code"], SENDER)
    assert refused.value.status == 409


def test_auto_approve_user_signs_in_without_anyone(fast: Harness) -> None:
    fast.control.apply_scenario(patch={"users": {DELEGATE: {"auto_approve": True}}})
    app = public_app(fast)
    result = app.acquire_token_by_device_flow(app.initiate_device_flow([SMTP_SEND]))
    assert result["id_token_claims"]["preferred_username"] == DELEGATE
    assert SMTP_SEND in result["scope"].split()
    assert unverified_claims(result["access_token"]).raw["aud"] == "https://outlook.office.com"


def test_one_resource_per_request(harness: Harness) -> None:
    flow = public_app(harness).initiate_device_flow(["Mail.Send", SMTP_SEND])
    assert flow["error"] == "invalid_scope" and flow["error_codes"] == [28000]


def test_confidential_app_learns_after_sign_in_that_public_flows_are_off(fast: Harness) -> None:
    app = public_app(fast, client_id=fast.scenario.sender.client_id)
    flow = app.initiate_device_flow(["Mail.Send"])
    thread = _approve_when_pending(fast, SENDER)
    result = app.acquire_token_by_device_flow(flow)
    thread.join()
    assert result["error"] == "invalid_client" and _error_code(result) == 7000218


def test_scope_without_consent(fast: Harness) -> None:
    fast.control.apply_scenario(patch={"users": {SENDER: {"consented": ["Mail.Send"]}}})
    app = public_app(fast)
    flow = app.initiate_device_flow([SMTP_SEND])
    fast.control.approve_device_code(flow["user_code"], SENDER)
    result = app.acquire_token_by_device_flow(flow)
    assert result["error"] == "invalid_grant" and _error_code(result) == 65001
    assert result["suberror"] == "consent_required"


# -- authorization code + PKCE ------------------------------------------------------------------------------


def test_auth_code_flow_with_pkce_and_nonce(harness: Harness) -> None:
    app = public_app(harness)
    result = sign_in(harness, DELEGATE, ["Mail.Send", "Mail.Send.Shared"], app=app)
    assert set(result["scope"].split()) == {"Mail.Send", "Mail.Send.Shared", "offline_access", "openid", "profile"}
    assert result["id_token_claims"]["nonce"]  # MSAL compared it with the hash of its own
    assert unverified_claims(result["access_token"]).upn == DELEGATE
    [account] = app.get_accounts()
    assert account["username"] == DELEGATE


def test_redirect_uri_port_is_ignored_for_localhost_but_not_the_host(harness: Harness) -> None:
    app = public_app(harness)
    with http(harness) as client:
        ok = client.get(auth_code_flow(app, ["Mail.Send"], redirect_uri="http://localhost:55123")["auth_uri"])
        wrong = client.get(auth_code_flow(app, ["Mail.Send"], redirect_uri="https://evil.example/cb")["auth_uri"])
    assert ok.status_code == 200 and "code" in hidden_fields(ok.text)
    assert wrong.status_code == 400 and "AADSTS50011" in wrong.text
    assert "code" not in hidden_fields(wrong.text)


def test_code_is_one_time_and_bound_to_the_verifier_and_redirect(harness: Harness) -> None:
    app = public_app(harness)
    flow = auth_code_flow(app, ["Mail.Send"])
    with http(harness) as client:
        fields = hidden_fields(client.get(flow["auth_uri"]).text)
    redeem = {"grant_type": "authorization_code", "code": fields["code"], "redirect_uri": REDIRECT,
              "scope": "Mail.Send offline_access openid profile"}
    wrong_verifier = _post_token(harness, **redeem, code_verifier="x" * 50)
    assert wrong_verifier.json()["error_codes"] == [501481]
    wrong_redirect = _post_token(harness, **{**redeem, "redirect_uri": "http://localhost:1"}, code_verifier=flow["code_verifier"])
    assert wrong_redirect.json()["error_codes"] == [50011]
    assert _post_token(harness, **redeem, code_verifier=flow["code_verifier"]).status_code == 200
    reused = _post_token(harness, **redeem, code_verifier=flow["code_verifier"])
    assert reused.json()["error"] == "invalid_grant" and reused.json()["error_codes"] == [54005]


def test_plain_pkce_and_query_response_mode_are_refused(harness: Harness) -> None:
    app = public_app(harness)
    flow = auth_code_flow(app, ["Mail.Send"])
    with http(harness) as client:
        plain = client.get(flow["auth_uri"].replace("code_challenge_method=S256", "code_challenge_method=plain"))
        query = client.get(flow["auth_uri"].replace("response_mode=form_post", "response_mode=query"))
    assert hidden_fields(plain.text)["error"] == "invalid_grant"
    assert hidden_fields(plain.text)["state"] == flow["state"]
    assert query.status_code == 400 and "code" not in hidden_fields(query.text)


def test_login_form_when_no_user_is_hinted(harness: Harness) -> None:
    app = public_app(harness)
    flow = auth_code_flow(app, ["Mail.Send"], user=None)
    with http(harness) as client:
        page = client.get(flow["auth_uri"])
        assert 'name="username"' in page.text and "code" not in hidden_fields(page.text)
        unknown = client.post(flow["auth_uri"], data={"username": "nobody@contoso.example"})
        assert 'name="username"' in unknown.text and "incorrect" in unknown.text
        known = client.post(flow["auth_uri"], data={"username": DELEGATE})
    result = app.acquire_token_by_auth_code_flow(flow, hidden_fields(known.text))
    assert result["id_token_claims"]["preferred_username"] == DELEGATE


def test_interactive_login_with_the_harness_browser(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """acquire_token_interactive unchanged: MSAL's loopback listener gets the form_post."""
    monkeypatch.setenv("HARNESS_CA_BUNDLE", str(harness.ca_bundle))
    monkeypatch.setenv("HARNESS_BROWSER_USER", DELEGATE)
    browser.register()
    app = public_app(harness)
    result = app.acquire_token_interactive(["Mail.Send"], timeout=30, extra_scopes_to_consent=[SMTP_SEND])
    assert result.get("id_token_claims", {}).get("preferred_username") == DELEGATE, result
    smtp = app.acquire_token_silent([SMTP_SEND], account=app.get_accounts()[0])
    assert smtp is not None and unverified_claims(smtp["access_token"]).has_scope("SMTP.Send")


def test_browser_command_for_the_browser_variable(harness: Harness, tmp_path: Path) -> None:
    """$BROWSER as CPython's webbrowser runs it, in a process of its own (as `outbox login` would)."""
    command = browser.install(tmp_path)
    script = textwrap.dedent(
        f"""
        import ssl, httpx, msal
        app = msal.PublicClientApplication({PUBLIC_CLIENT_ID!r}, authority={harness.authority!r},
            http_client=httpx.Client(verify=ssl.create_default_context(cafile={str(harness.ca_bundle)!r})),
            instance_discovery=False)
        result = app.acquire_token_interactive(["Mail.Send"], timeout=30, login_hint={SENDER!r})
        print(result.get("id_token_claims", {{}}).get("preferred_username") or result)
        """
    )
    env = {**os.environ, "BROWSER": str(command), "HARNESS_CA_BUNDLE": str(harness.ca_bundle)}
    env.pop("HARNESS_BROWSER_USER", None)  # login_hint picks the user: no form
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == SENDER, done.stdout + done.stderr


def test_browser_reports_an_error_page(harness: Harness) -> None:
    flow = auth_code_flow(public_app(harness), ["Mail.Send"], redirect_uri="https://evil.example/cb")
    with pytest.raises(browser.BrowserError, match="AADSTS50011"):
        browser.follow(flow["auth_uri"], ca_file=str(harness.ca_bundle))


# -- refresh tokens ----------------------------------------------------------------------------------------


def test_force_refresh_returns_a_new_refresh_token_and_the_old_one_stays_valid(harness: Harness) -> None:
    app = public_app(harness)
    first = sign_in(harness, SENDER, ["Mail.Send"], app=app)
    account = app.get_accounts()[0]
    refreshed = app.acquire_token_silent(["Mail.Send"], account=account, force_refresh=True)
    assert refreshed is not None and refreshed["token_source"] == "identity_provider"
    assert refreshed["refresh_token"] != first["refresh_token"]
    old = _post_token(harness, grant_type="refresh_token", refresh_token=first["refresh_token"],
                      scope="Mail.Send offline_access openid profile")
    assert old.status_code == 200 and old.json()["client_info"]
    listed = harness.control.refresh_tokens(user=SENDER)
    assert len(listed) == 3 and not any(r["revoked"] for r in listed)
    text = json.dumps(listed)
    assert first["refresh_token"] not in text and refreshed["refresh_token"] not in text
    assert {"user", "client", "issued_at", "last_used", "revoked"} <= set(listed[0])


def test_one_sign_in_serves_both_resources(harness: Harness) -> None:
    app = public_app(harness)
    sign_in(harness, SENDER, ["Mail.Send"], app=app)
    smtp = app.acquire_token_silent([SMTP_SEND], account=app.get_accounts()[0])
    assert smtp is not None and SMTP_SEND in smtp["scope"].split()
    assert unverified_claims(smtp["access_token"]).raw["scp"] == "SMTP.Send"


def test_revoked_sign_in(harness: Harness) -> None:
    app = public_app(harness)
    sign_in(harness, SENDER, ["Mail.Send"], app=app)
    assert harness.control.revoke_refresh_tokens(SENDER) == 1
    result = app.acquire_token_silent_with_error(["Mail.Send"], account=app.get_accounts()[0], force_refresh=True)
    assert result is not None and result["error"] == "invalid_grant" and _error_code(result) == 50173
    assert "TokensValidFrom" in result["error_description"] or "revoked" in result["error_description"]
    assert all(r["revoked"] for r in harness.control.refresh_tokens(user=SENDER))
    sign_in(harness, SENDER, ["Mail.Send"])  # signing in again works


@pytest.mark.parametrize(("days", "alive"), [(89, True), (91, False)])
def test_inactive_refresh_token(harness: Harness, days: int, alive: bool) -> None:
    app = public_app(harness)
    sign_in(harness, SENDER, ["Mail.Send"], app=app)
    harness.control.age_refresh_tokens(SENDER, days)
    result = app.acquire_token_silent_with_error(["Mail.Send"], account=app.get_accounts()[0], force_refresh=True)
    assert result is not None
    if alive:
        assert "access_token" in result, result
    else:
        assert result["error"] == "invalid_grant" and _error_code(result) == 700082
        assert "90.00:00:00" in result["error_description"]


def test_mfa_required_on_refresh(harness: Harness) -> None:
    app = public_app(harness)
    sign_in(harness, SENDER, ["Mail.Send"], app=app)
    harness.control.apply_scenario(patch={"users": {SENDER: {"mfa_required": True}}})
    result = app.acquire_token_silent_with_error(["Mail.Send"], account=app.get_accounts()[0], force_refresh=True)
    assert result is not None and result["error"] == "interaction_required"
    assert _error_code(result) == 50076 and result["suberror"] == "basic_action"


def test_scope_consented_after_the_sign_in(harness: Harness) -> None:
    harness.control.apply_scenario(patch={"users": {SENDER: {"consented": ["Mail.Send"]}}})
    app = public_app(harness)
    sign_in(harness, SENDER, ["Mail.Send"], app=app)
    harness.control.apply_scenario(patch={"users": {SENDER: {"consented": ["Mail.Send", SMTP_SEND]}}})
    result = app.acquire_token_silent_with_error([SMTP_SEND], account=app.get_accounts()[0])
    assert result is not None and _error_code(result) == 70000


def test_refresh_token_errors_without_msal(harness: Harness) -> None:
    first = sign_in(harness, SENDER, ["Mail.Send"])
    refresh = {"grant_type": "refresh_token", "scope": "Mail.Send offline_access", "refresh_token": first["refresh_token"]}
    garbled = _post_token(harness, **{**refresh, "refresh_token": "garbled"})
    assert garbled.json()["error"] == "invalid_grant" and garbled.json()["error_codes"] == []
    secret = _post_token(harness, **refresh, client_secret="s3cret")
    assert secret.status_code == 401 and secret.json()["error_codes"] == [700025]
    no_offline = _post_token(harness, **{**refresh, "scope": "Mail.Send"})
    assert no_offline.status_code == 200 and "refresh_token" not in no_offline.json()


def test_client_credentials_still_refused_for_a_public_client_without_a_certificate(harness: Harness) -> None:
    answer = _post_token(harness, grant_type="client_credentials", scope="https://graph.microsoft.com/.default")
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


# -- control API --------------------------------------------------------------------------------------------


def test_control_api_refuses_unknown_users_and_codes(harness: Harness) -> None:
    with pytest.raises(HarnessControlError) as unknown_user:
        harness.control.revoke_refresh_tokens("nobody@contoso.example")
    assert unknown_user.value.status == 404
    with pytest.raises(HarnessControlError) as unknown_code:
        harness.control.approve_device_code("ABCDEFGHJ", SENDER)
    assert unknown_code.value.status == 404
    with pytest.raises(HarnessControlError) as bad_days:
        harness.control.age_refresh_tokens(SENDER, -1)
    assert bad_days.value.status == 400


def test_reset_forgets_sign_ins(harness: Harness) -> None:
    sign_in(harness, SENDER, ["Mail.Send"])
    harness.control.reset()
    assert harness.control.refresh_tokens() == []


def test_verifier_digest_is_s256(harness: Harness) -> None:
    """The fake checks what MSAL computes: base64url(sha256(verifier)) without padding."""
    flow = auth_code_flow(public_app(harness), ["Mail.Send"])
    digest = base64.urlsafe_b64encode(hashlib.sha256(flow["code_verifier"].encode()).digest()).decode().rstrip("=")
    assert f"code_challenge={digest}" in flow["auth_uri"]


def test_authorization_code_lives_auth_code_lifetime_s(harness: Harness) -> None:
    harness.control.apply_scenario(patch={"delegated": {"auth_code_lifetime_s": 0}})
    app = public_app(harness)
    flow = auth_code_flow(app, ["Mail.Send"])
    with http(harness) as client:
        fields = hidden_fields(client.get(flow["auth_uri"]).text)
    result = app.acquire_token_by_auth_code_flow(flow, fields)
    assert result["error"] == "invalid_grant" and result["error_codes"] == []


def test_prompt_none_without_a_known_user_answers_the_app(harness: Harness) -> None:
    flow = auth_code_flow(public_app(harness), ["Mail.Send"], user=None, prompt="none")
    with http(harness) as client:
        fields = hidden_fields(client.get(flow["auth_uri"]).text)
    assert fields["error"] == "invalid_grant" and fields["state"] == flow["state"]
