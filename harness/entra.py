"""Fake Entra ID: OpenID discovery, JWKS and the v2.0 token endpoint for app-only certificate auth.

The client assertion is verified for real: the key is looked up among the certificates registered on the
app by ``x5t`` (RS256, what MSAL sends with a thumbprint) or ``x5t#S256`` (PS256, public certificate only),
the signature is checked with that certificate, ``aud`` must be this token endpoint, ``iss`` = ``sub`` =
client id, and the time window must contain now (with Entra's 5 minutes of skew). Repeated ``jti`` values
are accepted, because MSAL reuses one assertion for about 9 minutes.

Decisions where Entra's behaviour is not documented (see docs/harness.md):
- an app with no consented role for the resource still gets a token, without a ``roles`` claim; the
  resource (Graph, Exchange) then refuses it, which is what tenants see after a missing admin consent;
- discovery for an unknown tenant answers 400 with the AADSTS90002 body whose ``error`` is
  ``invalid_tenant`` (as seen in MSAL and az CLI error reports); the token endpoint answers the catalog's
  ``entra.tenant_not_found`` unchanged.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.faults import aiohttp_middleware
from harness.pki import AppCertificate
from harness.runtime import HarnessRuntime
from harness.scenario import Scenario
from harness.server import Endpoint
from harness.tokens import EXCHANGE, GRAPH, KEYVAULT, Resource

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW_S = 300
RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("runtime", HarnessRuntime)


class EntraFailure(Exception):
    """A token request Entra refuses: the catalog entry and its placeholder values."""

    def __init__(self, entry: str, *, body_extra: Mapping[str, Any] | None = None, **fmt: Any) -> None:
        super().__init__(entry)
        self.entry = entry
        self.fmt = fmt
        self.body_extra = dict(body_extra or {})


def _operation(request: web.Request) -> str:
    path = request.path
    if path.endswith("/token"):
        return "token"
    if path.endswith("/devicecode"):
        return "devicecode"
    if path.endswith("/authorize"):
        return "authorize"
    if "/keys" in path:
        return "keys"
    return "discovery"


def build_app(runtime: HarnessRuntime) -> web.Application:
    app = web.Application(middlewares=[aiohttp_middleware(runtime.faults, "entra", operation_of=_operation)])
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration_v2)
    app.router.add_get("/{tenant}/.well-known/openid-configuration", openid_configuration_v1)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", keys)
    app.router.add_get("/{tenant}/discovery/keys", keys)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    from harness import entra_delegated  # it builds on this module's helpers

    entra_delegated.add_routes(app)
    return app


def register(runtime: HarnessRuntime) -> Endpoint:
    return runtime.host.add_app("entra", build_app(runtime))


# -- helpers ----------------------------------------------------------------------------------------------


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _known_tenant(scenario: Scenario, tenant: str) -> str | None:
    """The tenant id for a path segment (id or verified domain), or None."""
    if tenant.lower() in (scenario.tenant_id.lower(), scenario.tenant_domain.lower()):
        return scenario.tenant_id
    return None


def error_body(request: web.Request, entry: str, **fmt: Any) -> tuple[int, dict[str, object]]:
    """The catalog entry's token endpoint error as Entra renders it for this request."""
    from harness import replies

    return replies.entra_error(
        entry,
        trace_id=str(uuid.uuid4()),
        correlation_id=request.headers.get("client-request-id") or str(uuid.uuid4()),
        timestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        **fmt,
    )


def _error(
    request: web.Request, entry: str, *, body_extra: Mapping[str, Any] | None = None, **fmt: Any
) -> web.Response:
    status, body = error_body(request, entry, **fmt)
    body.update(body_extra or {})
    return _json(request, body, status=status, entry=entry)


def _json(
    request: web.Request, body: Mapping[str, Any], *, status: int = 200, entry: str = ""
) -> web.Response:
    headers = {
        "Cache-Control": "no-store, no-cache",
        "Pragma": "no-cache",
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-ests-server": "harness",
    }
    if "client-request-id" in request.headers:
        headers["client-request-id"] = request.headers["client-request-id"]
    if entry:
        headers["x-harness-catalog"] = entry
    return web.json_response(dict(body), status=status, headers=headers)


def _tenant_not_found(request: web.Request, tenant: str, *, discovery: bool) -> web.Response:
    response = _error(request, "entra.tenant_not_found", tenant=tenant)
    if discovery:
        import json

        assert isinstance(response.body, bytes)  # _error renders the body itself
        body = json.loads(response.body)
        body["error"] = "invalid_tenant"
        return _json(request, body, status=response.status, entry="entra.tenant_not_found")
    return response


# -- discovery --------------------------------------------------------------------------------------------


async def openid_configuration_v2(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    tenant = request.match_info["tenant"]
    tid = _known_tenant(runtime.scenario, tenant)
    if tid is None:
        return _tenant_not_found(request, tenant, discovery=True)
    base = _base(request)
    return _json(
        request,
        {
            "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "tid",
                "ver",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        },
    )


async def openid_configuration_v1(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    tenant = request.match_info["tenant"]
    tid = _known_tenant(runtime.scenario, tenant)
    if tid is None:
        return _tenant_not_found(request, tenant, discovery=True)
    base = _base(request)
    return _json(
        request,
        {
            "token_endpoint": f"{base}/{tid}/oauth2/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/common/discovery/keys",
            "issuer": f"https://sts.windows.net/{tid}/",
            "authorization_endpoint": f"{base}/{tid}/oauth2/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/devicecode",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["pairwise"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": "graph.microsoft.com",
        },
    )


async def keys(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    return _json(request, runtime.tokens.jwks())


# -- token ------------------------------------------------------------------------------------------------


def resources(runtime: HarnessRuntime) -> dict[str, Resource]:
    """Resource identifier (URI or app id) -> resource, including the fake vault's dotted resource."""
    vault = Resource("keyvault", runtime.keyvault_resource, KEYVAULT.app_id)
    table: dict[str, Resource] = {}
    for resource in (GRAPH, EXCHANGE, KEYVAULT, vault):
        table[resource.uri.lower()] = resource
        table[resource.app_id.lower()] = resource
    # Graph's legacy alias, still accepted by Entra for the v1 resource form.
    table["https://graph.microsoft.com"] = GRAPH
    return table


async def token(request: web.Request) -> web.Response:
    from harness import entra_delegated

    runtime = request.app[RUNTIME_KEY]
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    try:
        if params.get("grant_type") in entra_delegated.GRANTS:
            return entra_delegated.grant(request, runtime, params)
        return _issue(request, runtime, params)
    except EntraFailure as failure:
        return _error(request, failure.entry, body_extra=failure.body_extra, **failure.fmt)


def _issue(request: web.Request, runtime: HarnessRuntime, params: dict[str, str]) -> web.Response:
    scenario = runtime.scenario
    tenant = request.match_info["tenant"]
    tid = _known_tenant(scenario, tenant)
    if tid is None:
        raise EntraFailure("entra.tenant_not_found", tenant=tenant)
    if params.get("grant_type") != "client_credentials":
        raise EntraFailure("entra.invalid_request")
    client_id = params.get("client_id", "")
    app = scenario.app_by_client_id(client_id)
    if app is None:
        raise EntraFailure("entra.app_not_found", client_id=client_id, tenant=tenant)
    if "client_secret" in params:
        raise EntraFailure("entra.invalid_secret", client_id=client_id)
    assertion = params.get("client_assertion")
    if not assertion or params.get("client_assertion_type") != ASSERTION_TYPE:
        raise EntraFailure("entra.assertion_missing")
    token_url = f"{_base(request)}{request.path}"
    _verify_assertion(assertion, runtime.credentials.registered_keys(app), client_id, token_url)

    scopes = params.get("scope", "").split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise EntraFailure("entra.scope_not_default", scope=params.get("scope", ""))
    resource_id = scopes[0].removesuffix("/.default")
    resource = resources(runtime).get(resource_id.lower())
    if resource is None:
        raise EntraFailure("entra.resource_not_found", resource=resource_id, tenant=tenant)
    if resource.name == "graph":
        roles = app.consented_graph_roles
    elif resource.name == "exchange":
        roles = app.consented_exchange_roles
    else:
        roles = ()
    minted = runtime.tokens.mint(
        tenant_id=tid,
        client_id=app.client_id,
        object_id=app.service_principal_id,
        audience=resource_id,
        roles=roles,
        lifetime_s=scenario.token_lifetime_s,
        app_displayname=app.display_name or app.name,
    )
    return _json(
        request,
        {
            "token_type": "Bearer",
            "expires_in": minted.expires_in,
            "ext_expires_in": minted.expires_in,
            "access_token": minted.token,
        },
    )


def _verify_assertion(assertion: str, keys: list[AppCertificate], client_id: str, token_url: str) -> None:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise EntraFailure("entra.invalid_client") from exc
    x5t = str(header.get("x5t", "")).rstrip("=")
    x5t_s256 = str(header.get("x5t#S256", "")).rstrip("=")
    key = next(
        (k for k in keys if (x5t and k.x5t == x5t) or (x5t_s256 and k.x5t_s256 == x5t_s256)),
        None,
    )
    now = time.time()
    if key is None or key.is_expired() or key.not_before.timestamp() > now + CLOCK_SKEW_S:
        raise EntraFailure("entra.invalid_signature")
    public_key = key.certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):  # RS256/PS256 only: app certificates are RSA
        raise EntraFailure("entra.invalid_signature")
    try:
        claims = jwt.decode(
            assertion,
            public_key,
            algorithms=["RS256", "PS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise EntraFailure("entra.invalid_signature") from exc
    except jwt.PyJWTError as exc:
        raise EntraFailure("entra.invalid_client") from exc
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise EntraFailure("entra.invalid_client")
    if str(claims.get("aud", "")).rstrip("/") != token_url.rstrip("/"):
        raise EntraFailure("entra.invalid_client")
    exp = claims.get("exp")
    nbf = claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise EntraFailure("entra.invalid_client")
    if not (nbf - CLOCK_SKEW_S <= now <= exp + CLOCK_SKEW_S):
        raise EntraFailure(
            "entra.assertion_expired", now=_iso(now), nbf=_iso(float(nbf)), exp=_iso(float(exp))
        )


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
