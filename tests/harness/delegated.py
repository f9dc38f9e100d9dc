"""Helpers for the delegated sign-in tests: the real MSAL public client against the fake Entra."""

from __future__ import annotations

import html
import re
import ssl
from typing import Any

import httpx
import msal

from harness.up import Harness

PUBLIC_CLIENT_ID = "0b0c0000-0000-4000-8000-0000000de1e9"
SENDER = "sender@contoso.example"
DELEGATE = "delegate@contoso.example"
SHARED = "noreply@contoso.example"
SMTP_SEND = "https://outlook.office.com/SMTP.Send"
REDIRECT = "http://localhost:8400"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)" />')


def http(h: Harness) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(h.ca_bundle)), timeout=10)


def public_app(h: Harness, client_id: str = PUBLIC_CLIENT_ID) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        client_id, authority=h.authority, http_client=http(h), instance_discovery=False
    )


def hidden_fields(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in _HIDDEN.findall(page)}


def auth_code_flow(app: msal.PublicClientApplication, scopes: list[str], *, user: str | None = SENDER,
                   redirect_uri: str = REDIRECT, **kwargs: Any) -> dict[str, Any]:
    return app.initiate_auth_code_flow(
        scopes, redirect_uri=redirect_uri, login_hint=user, response_mode="form_post", **kwargs
    )


def sign_in(h: Harness, user: str, scopes: list[str], app: msal.PublicClientApplication | None = None) -> dict[str, Any]:
    """Authorization code + PKCE: MSAL builds the request, httpx plays the browser (login_hint picks the
    user), MSAL redeems the form_post fields. Returns MSAL's result (asserted successful)."""
    app = app or public_app(h)
    flow = auth_code_flow(app, scopes, user=user)
    with http(h) as client:
        page = client.get(flow["auth_uri"])
    assert page.status_code == 200, page.text
    result = app.acquire_token_by_auth_code_flow(flow, hidden_fields(page.text))
    assert "access_token" in result, result
    return result


def token_url(h: Harness) -> str:
    return f"{h.authority}/oauth2/v2.0/token"
