"""Fake Entra ID, delegated side: a user signs in to a public client (device code, or authorization code
with PKCE answered by form_post to a loopback redirect URI), and refresh tokens keep the sign-in alive.

Built to what MSAL for Python 1.39 sends and expects (shared/reference/delegated-auth-notes.md §2-4, §8):

* ``POST /{tenant}/oauth2/v2.0/devicecode``: one resource per request (AADSTS28000); ``user_code`` of
  9 characters, ``verification_uri`` https://microsoft.com/devicelogin, ``expires_in`` and ``interval``
  from the scenario's ``[delegated]`` table; the code is answered through the control API (or by a user
  with ``auto_approve``).
* ``GET|POST /{tenant}/oauth2/v2.0/authorize``: ``client_id``, ``redirect_uri`` (a registered one; the
  port of ``http://localhost`` is ignored, AADSTS50011 otherwise), ``response_mode=form_post`` only,
  PKCE ``S256`` only; the user comes from ``login_hint``, else an ``auto_approve`` user, else a username
  form posting back here. The answer is Entra's auto-submitting form POSTing ``code``, ``state`` and
  ``client_info`` (or ``error``, ``error_description``, ``state``) to the redirect URI.
* token grants ``device_code``, ``authorization_code`` (one-time, bound to client, redirect URI and PKCE
  verifier) and ``refresh_token`` (server-side records in ``runtime.sign_ins``; each use returns a new
  refresh token and the old one stays valid, as Entra documents).

Decisions where Microsoft documents nothing (docs/harness.md lists them):
- consent is the scenario's ``users.*.consented``; there is no consent page, a scope outside it answers
  AADSTS65001 (``consent_required``) on every grant;
- a refresh token remembers what the user had consented when it was issued; a scope consented later
  answers AADSTS70000 (sign in again) on refresh;
- ``mfa_required`` users pass MFA in the interactive flows; every refresh grant answers AADSTS50076
  (``interaction_required``, ``basic_action``), like a Conditional Access policy the token does not meet;
- a confidential app (not "Allow public client flows") may start a device code; the grant answers
  AADSTS7000218 once the user approved (as reported: "after sign-in");
- ``slow_down`` is never answered.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from harness.entra import (
    ASSERTION_TYPE,
    RUNTIME_KEY,
    EntraFailure,
    _base,
    _iso,
    _json,
    _known_tenant,
    _verify_assertion,
    error_body,
)
from harness.runtime import HarnessRuntime
from harness.scenario import AppRegistration, Scenario, User
from harness.signins import DAY_S, AuthCode
from harness.tokens import GRAPH, OUTLOOK_AUDIENCE

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRANTS = (DEVICE_CODE_GRANT, "authorization_code", "refresh_token")
VERIFICATION_URI = "https://microsoft.com/devicelogin"
RESERVED_SCOPES = ("openid", "profile", "offline_access", "email")
ID_TOKEN_LIFETIME_S = 3600
ResourceKind = Literal["graph", "outlook"]
_GRAPH_IDS = ("https://graph.microsoft.com", "https://graph.microsoft.com/", GRAPH.app_id)
_OUTLOOK_IDS = (
    "https://outlook.office.com", "https://outlook.office365.com", "00000002-0000-0ff1-ce00-000000000000"
)
AUDIENCES: dict[ResourceKind, str] = {"graph": GRAPH.app_id, "outlook": OUTLOOK_AUDIENCE}


# -- scopes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One requested scope: its resource, its short name and how it was written (to echo it back)."""

    resource: ResourceKind
    name: str
    prefix: str  # "" for Graph short names, "<resource URI>/" otherwise

    def key(self) -> tuple[str, str]:
        return self.resource, self.name.lower()


def _parse_one(text: str) -> Scope | None:
    """``Mail.Send``, ``https://graph.microsoft.com/Mail.Send``, ``https://outlook.office.com/SMTP.Send``;
    None for an unknown resource."""
    if "/" not in text:
        return Scope("graph", text, "")
    resource, _, name = text.rpartition("/")
    if resource.lower().rstrip("/") in {r.rstrip("/") for r in _GRAPH_IDS}:
        return Scope("graph", name, "")
    if resource.lower() in _OUTLOOK_IDS:
        return Scope("outlook", name, resource + "/")
    return None


@dataclass(frozen=True)
class ScopeRequest:
    raw: str
    scopes: tuple[Scope, ...]
    reserved: tuple[str, ...]

    @property
    def resource(self) -> ResourceKind:
        return self.scopes[0].resource if self.scopes else "graph"

    @property
    def wants_refresh_token(self) -> bool:
        return "offline_access" in self.reserved

    @property
    def wants_id_token(self) -> bool:
        return "openid" in self.reserved


def parse_scopes(raw: str, *, tenant: str, single_resource: bool = True) -> ScopeRequest:
    scopes: list[Scope] = []
    reserved: list[str] = []
    for item in raw.split():
        if item.lower() in RESERVED_SCOPES:
            reserved.append(item.lower())
            continue
        scope = _parse_one(item)
        if scope is None:
            raise EntraFailure("entra.resource_not_found", resource=item.rpartition("/")[0], tenant=tenant)
        scopes.append(scope)
    if single_resource and len({s.resource for s in scopes}) > 1:
        raise EntraFailure("entra.multiple_resources", scope=raw)
    return ScopeRequest(raw=raw, scopes=tuple(scopes), reserved=tuple(dict.fromkeys(reserved)))


def _consented(user: User) -> dict[tuple[str, str], Scope]:
    table: dict[tuple[str, str], Scope] = {}
    for text in user.consented:
        scope = _parse_one(text)
        if scope is not None:
            table[scope.key()] = scope
    return table


def granted_scopes(request: ScopeRequest, consented: tuple[str, ...], *, app: AppRegistration, user: User) -> list[Scope]:
    """The requested scopes (``.default``: everything consented for the resource), each consented, in
    the consented spelling; AADSTS65001 when one is not."""
    table = _consented(User(address=user.address, consented=consented))
    out: list[Scope] = []
    for scope in request.scopes:
        if scope.name == ".default":
            out.extend(s for k, s in table.items() if k[0] == scope.resource)
            continue
        found = table.get(scope.key())
        if found is None:
            raise EntraFailure(
                "entra.user_consent_missing",
                body_extra={"suberror": "consent_required"},
                client_id=app.client_id,
                app_name=app.display_name or app.name,
            )
        out.append(Scope(found.resource, found.name, scope.prefix))
    return list({s.key(): s for s in out}.values())


# -- shared pieces -------------------------------------------------------------------------------------


def client_info(user: User, tenant_id: str) -> str:
    raw = json.dumps({"uid": user.object_id, "utid": tenant_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _tenant(request: web.Request, scenario: Scenario) -> str:
    tenant = request.match_info["tenant"]
    tid = _known_tenant(scenario, tenant)
    if tid is None:
        raise EntraFailure("entra.tenant_not_found", tenant=tenant)
    return tid


def _app(scenario: Scenario, client_id: str, tenant: str) -> AppRegistration:
    app = scenario.app_by_client_id(client_id)
    if app is None:
        raise EntraFailure("entra.app_not_found", client_id=client_id, tenant=tenant)
    return app


def _user(scenario: Scenario, address: str) -> User:
    user = scenario.user(address)
    if user is None:  # the user was removed from the scenario after signing in
        raise EntraFailure("entra.invalid_grant")
    return user


def _check_client(runtime: HarnessRuntime, request: web.Request, app: AppRegistration, params: dict[str, str]) -> None:
    """A public client sends no credential (700025 if it does); a confidential one must (7000218)."""
    has_credential = "client_secret" in params or "client_assertion" in params
    if app.public_client:
        if has_credential:
            raise EntraFailure("entra.public_client_credential")
        return
    if not has_credential:
        raise EntraFailure("entra.public_client_disabled")
    if "client_secret" in params:
        raise EntraFailure("entra.invalid_secret", client_id=app.client_id)
    if params.get("client_assertion_type") != ASSERTION_TYPE:
        raise EntraFailure("entra.assertion_missing")
    token_url = f"{_base(request)}{request.path}"
    _verify_assertion(params["client_assertion"], runtime.credentials.registered_keys(app), app.client_id, token_url)


def _tokens(
    request: web.Request,
    runtime: HarnessRuntime,
    *,
    tid: str,
    app: AppRegistration,
    user: User,
    scopes: ScopeRequest,
    consented: tuple[str, ...],
    nonce: str | None = None,
) -> web.Response:
    scenario = runtime.scenario
    granted = granted_scopes(scopes, consented, app=app, user=user)
    minted = runtime.tokens.mint_delegated(
        tenant_id=tid,
        client_id=app.client_id,
        user_object_id=user.object_id,
        upn=user.address,
        name=user.display_name or user.address,
        audience=AUDIENCES[scopes.resource],
        scopes=[s.name for s in granted],
        lifetime_s=scenario.token_lifetime_s,
    )
    echo = [s.prefix + s.name for s in granted] + list(scopes.reserved)
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(echo),
        "expires_in": minted.expires_in,
        "ext_expires_in": minted.expires_in,
        "access_token": minted.token,
    }
    if scopes.wants_refresh_token:
        body["refresh_token"] = runtime.sign_ins.issue_refresh_token(
            user=user.address, client_id=app.client_id, consented=user.consented
        )
    if scopes.wants_id_token:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": f"{_base(request)}/{tid}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME_S,
            "name": user.display_name or user.address,
            "oid": user.object_id,
            "preferred_username": user.address,
            "rh": "0.harness.",
            "sub": str(uuid.uuid5(uuid.UUID(user.object_id), app.client_id)),  # pairwise, per app
            "tid": tid,
            "uti": uuid.uuid4().hex,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        body["id_token"] = runtime.tokens.sign_id_token(claims)
    body["client_info"] = client_info(user, tid)
    return _json(request, body)


# -- token grants ---------------------------------------------------------------------------------------


def grant(request: web.Request, runtime: HarnessRuntime, params: dict[str, str]) -> web.Response:
    scenario = runtime.scenario
    tid = _tenant(request, scenario)
    app = _app(scenario, params.get("client_id", ""), request.match_info["tenant"])
    grant_type = params["grant_type"]
    if grant_type == DEVICE_CODE_GRANT:
        return _device_code_grant(request, runtime, tid, app, params)
    _check_client(runtime, request, app, params)
    if grant_type == "authorization_code":
        return _auth_code_grant(request, runtime, tid, app, params)
    return _refresh_grant(request, runtime, tid, app, params)


def _device_code_grant(
    request: web.Request, runtime: HarnessRuntime, tid: str, app: AppRegistration, params: dict[str, str]
) -> web.Response:
    if app.public_client and ("client_secret" in params or "client_assertion" in params):
        raise EntraFailure("entra.public_client_credential")
    code = params.get("device_code") or params.get("code") or ""
    record = runtime.sign_ins.device_code(code)
    if record is None or record.client_id.lower() != app.client_id.lower() or record.status == "redeemed":
        raise EntraFailure("entra.bad_verification_code")
    if time.time() >= record.expires_at:
        raise EntraFailure("entra.expired_token")
    if record.status == "declined":
        raise EntraFailure("entra.authorization_declined")
    if record.status == "pending":
        raise EntraFailure("entra.authorization_pending")
    assert record.user is not None
    _check_client(runtime, request, app, params)  # a confidential app learns it only now ("after sign-in")
    scopes = parse_scopes(params.get("scope") or record.scope, tenant=tid)
    user = _user(runtime.scenario, record.user)
    response = _tokens(request, runtime, tid=tid, app=app, user=user, scopes=scopes, consented=user.consented)
    if not runtime.sign_ins.redeem_device_code(code):
        raise EntraFailure("entra.bad_verification_code")  # a concurrent poll redeemed it first
    return response


def _auth_code_grant(
    request: web.Request, runtime: HarnessRuntime, tid: str, app: AppRegistration, params: dict[str, str]
) -> web.Response:
    code = params.get("code", "")
    record = runtime.sign_ins.auth_code(code)
    if record is None or record.client_id.lower() != app.client_id.lower():
        raise EntraFailure("entra.invalid_grant")
    if record.redeemed:
        raise EntraFailure("entra.code_redeemed")
    if time.time() >= record.expires_at:
        raise EntraFailure("entra.invalid_grant")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri != record.redirect_uri:
        raise EntraFailure("entra.redirect_mismatch", redirect_uri=redirect_uri, client_id=app.client_id)
    if record.code_challenge is not None:
        verifier = params.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not verifier or digest != record.code_challenge:
            raise EntraFailure("entra.pkce_invalid")
    scopes = parse_scopes(params.get("scope") or record.scope, tenant=tid)
    user = _user(runtime.scenario, record.user)
    response = _tokens(
        request, runtime, tid=tid, app=app, user=user, scopes=scopes, consented=user.consented, nonce=record.nonce
    )
    runtime.sign_ins.redeem_auth_code(code)
    return response


def _days(seconds: float) -> str:
    """Entra's TimeSpan form, e.g. ``90.00:00:00``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}.{hours:02d}:{minutes:02d}:{secs:02d}"


def _refresh_grant(
    request: web.Request, runtime: HarnessRuntime, tid: str, app: AppRegistration, params: dict[str, str]
) -> web.Response:
    scenario = runtime.scenario
    scopes = parse_scopes(params.get("scope", ""), tenant=tid)
    token = params.get("refresh_token", "")
    record = runtime.sign_ins.refresh_token(token)
    if record is None or record.client_id.lower() != app.client_id.lower():
        raise EntraFailure("entra.invalid_grant")
    if record.revoked_at is not None:
        raise EntraFailure("entra.refresh_token_revoked", issued=_iso(record.issued_at), valid_from=_iso(record.revoked_at))
    inactive_s = scenario.delegated.refresh_token_inactive_days * DAY_S
    if time.time() - record.last_used > inactive_s:
        raise EntraFailure("entra.refresh_token_inactive", issued=_iso(record.issued_at), inactive=_days(inactive_s))
    user = _user(scenario, record.user)
    if user.mfa_required:
        resource = "https://graph.microsoft.com" if scopes.resource == "graph" else OUTLOOK_AUDIENCE
        raise EntraFailure("entra.mfa_required", body_extra={"suberror": "basic_action"}, resource=resource)
    granted = granted_scopes(scopes, user.consented, app=app, user=user)  # 65001 if consent was withdrawn
    at_issue = _consented(User(address=user.address, consented=record.consented))
    if any(s.key() not in at_issue for s in granted):
        raise EntraFailure("entra.scope_unauthorized")
    runtime.sign_ins.touch_refresh_token(token)
    return _tokens(request, runtime, tid=tid, app=app, user=user, scopes=scopes, consented=record.consented)


# -- devicecode endpoint --------------------------------------------------------------------------------


async def devicecode(request: web.Request) -> web.Response:
    from harness.entra import _error

    runtime = request.app[RUNTIME_KEY]
    scenario = runtime.scenario
    params = {k: str(v) for k, v in (await request.post()).items()}
    try:
        tid = _tenant(request, scenario)
        app = _app(scenario, params.get("client_id", ""), request.match_info["tenant"])
        scope = params.get("scope", "")
        parse_scopes(scope, tenant=tid)
        settings = scenario.delegated
        auto = scenario.auto_approve_user()
        device_code, record = runtime.sign_ins.new_device_code(
            client_id=app.client_id,
            scope=scope,
            expires_in_s=settings.device_code_expires_s,
            interval_s=settings.device_code_interval_s,
            approved_by=auto.address if auto else None,
        )
    except EntraFailure as failure:
        return _error(request, failure.entry, body_extra=failure.body_extra, **failure.fmt)
    return _json(
        request,
        {
            "user_code": record.user_code,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": settings.device_code_expires_s,
            "interval": settings.device_code_interval_s,
            "message": f"To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code "
            f"{record.user_code} to authenticate.",
        },
    )


# -- authorize endpoint ---------------------------------------------------------------------------------


def redirect_matches(registered: tuple[str, ...], redirect_uri: str) -> bool:
    """Exact match, except that ``http://localhost`` ignores the port (Entra reply-url.md)."""
    if redirect_uri in registered:
        return True
    asked = urlsplit(redirect_uri)
    if asked.scheme != "http" or asked.hostname not in ("localhost", "127.0.0.1"):
        return False
    for uri in registered:
        reg = urlsplit(uri)
        if (
            reg.scheme == "http"
            and reg.hostname == asked.hostname
            and reg.path.rstrip("/") == asked.path.rstrip("/")
            and reg.query == asked.query
        ):
            return True
    return False


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
        + html.escape(title)
        + "</title></head><body>"
        + body
        + "</body></html>"
    )
    return web.Response(
        text=text, status=status, content_type="text/html",
        headers={"Cache-Control": "no-store, no-cache", "x-ms-request-id": str(uuid.uuid4())},
    )


def _error_page(request: web.Request, entry: str, **fmt: Any) -> web.Response:
    """An error Entra cannot send back to the app (no trusted redirect URI): shown to the user."""
    _, body = error_body(request, entry, **fmt)
    description = str(body["error_description"]).split("\r\n")[0]
    response = _page(
        "Sign in to your account",
        f"<h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">{html.escape(str(body['error']))}</p>"
        f"<p id=\"error_description\">{html.escape(description)}</p>",
        status=400,
    )
    response.headers["x-harness-catalog"] = entry
    return response


def _form_post(redirect_uri: str, fields: dict[str, str]) -> web.Response:
    """Entra's response_mode=form_post page: a hidden form that submits itself to the redirect URI."""
    inputs = "".join(
        f"<input type=\"hidden\" name=\"{html.escape(k)}\" value=\"{html.escape(v)}\" />" for k, v in fields.items()
    )
    return _page(
        "Working...",
        f"<form method=\"POST\" name=\"hiddenform\" action=\"{html.escape(redirect_uri)}\">{inputs}"
        "<noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\" />"
        "</noscript></form><script language=\"javascript\">document.forms[0].submit();</script>",
    )


def _form_post_error(request: web.Request, redirect_uri: str, state: str | None, entry: str, **fmt: Any) -> web.Response:
    _, body = error_body(request, entry, **fmt)
    fields = {"error": str(body["error"]), "error_description": str(body["error_description"])}
    if state is not None:
        fields["state"] = state
    return _form_post(redirect_uri, fields)


def _login_form(request: web.Request, *, problem: str = "") -> web.Response:
    note = f"<p id=\"usernameError\">{html.escape(problem)}</p>" if problem else ""
    return _page(
        "Sign in to your account",
        f"<h1>Sign in</h1>{note}<form method=\"POST\" id=\"harness-login\" action=\"{html.escape(request.path_qs)}\">"
        "<input type=\"email\" name=\"username\" placeholder=\"Email, phone, or Skype\" />"
        "<input type=\"submit\" value=\"Next\" /></form>",
    )


async def authorize(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    scenario = runtime.scenario
    q = request.query
    tenant = request.match_info["tenant"]
    tid = _known_tenant(scenario, tenant)
    if tid is None:
        return _error_page(request, "entra.tenant_not_found", tenant=tenant)
    client_id = q.get("client_id", "")
    app = scenario.app_by_client_id(client_id)
    if app is None:
        return _error_page(request, "entra.app_not_found", client_id=client_id, tenant=tenant)
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_matches(app.redirect_uris, redirect_uri):
        return _error_page(request, "entra.redirect_mismatch", redirect_uri=redirect_uri, client_id=client_id)
    if q.get("response_mode") != "form_post" or q.get("response_type") != "code":
        # MSAL's loopback listener reads form_post only; anything else is outside what the fake serves.
        return _error_page(request, "entra.invalid_request")
    state = q.get("state")
    challenge = q.get("code_challenge")
    if challenge is not None and q.get("code_challenge_method") != "S256":
        return _form_post_error(request, redirect_uri, state, "entra.pkce_invalid")
    try:
        scope = parse_scopes(q.get("scope", ""), tenant=tid, single_resource=False)
    except EntraFailure as failure:
        return _form_post_error(request, redirect_uri, state, failure.entry, **failure.fmt)

    user: User | None
    if request.method == "POST":
        form = await request.post()
        user = scenario.user(str(form.get("username", "")).strip())
        if user is None:
            return _login_form(request, problem="This username may be incorrect.")
    else:
        hinted = scenario.user(q.get("login_hint", ""))
        user = hinted or scenario.auto_approve_user()
        if user is None:
            if q.get("prompt") == "none":
                return _form_post_error(request, redirect_uri, state, "entra.invalid_grant")
            return _login_form(request)
    code = runtime.sign_ins.new_auth_code(
        AuthCode(
            client_id=app.client_id,
            redirect_uri=redirect_uri,
            scope=scope.raw,
            user=user.address,
            code_challenge=challenge,
            nonce=q.get("nonce"),
            expires_at=time.time() + scenario.delegated.auth_code_lifetime_s,
        )
    )
    fields = {"code": code}
    if state is not None:
        fields["state"] = state
    fields["client_info"] = client_info(user, tid)
    return _form_post(redirect_uri, fields)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", devicecode)
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize", authorize)
