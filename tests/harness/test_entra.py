"""Fake Entra ID driven by MSAL unchanged, and every token error it claims, checked against the catalog."""

from __future__ import annotations

import datetime as dt
import ssl
import time
import uuid

import httpx
import jwt
import msal
import pytest

from harness.pki import AppCertificate, make_app_certificate
from harness.tokens import unverified_claims
from harness.up import Harness
from shared import catalog

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SMTP_SCOPE = "https://outlook.office365.com/.default"


def _cert(h: Harness) -> AppCertificate:
    return h.runtime.credentials.certificate("outbox-sender")


def _msal(h: Harness, cert: AppCertificate, *, thumbprint: bool = True, client_id: str | None = None, tenant: str | None = None):
    return msal.ConfidentialClientApplication(
        client_id or h.scenario.sender.client_id,
        client_credential=cert.msal_credential(with_thumbprint=thumbprint),
        authority=f"{h.url('entra')}/{tenant or h.scenario.tenant_id}",
        instance_discovery=False,
    )


def _http(h: Harness) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(h.ca_bundle)), timeout=10)


def _token_url(h: Harness, tenant: str | None = None) -> str:
    return f"{h.url('entra')}/{tenant or h.scenario.tenant_id}/oauth2/v2.0/token"


def _assertion(cert: AppCertificate, aud: str, client_id: str, *, now: float | None = None, life: float = 600, **claims) -> str:
    issued = time.time() if now is None else now
    body = {"aud": aud, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()), "nbf": issued, "exp": issued + life}
    body.update(claims)
    return jwt.encode(body, cert.private_key, algorithm="RS256", headers={"x5t": cert.x5t + "="})


def _post(h: Harness, *, scope: str = GRAPH_SCOPE, tenant: str | None = None, client_id: str | None = None, **form) -> httpx.Response:
    client_id = client_id or h.scenario.sender.client_id
    data = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    if "client_assertion" not in form:
        data["client_assertion"] = _assertion(_cert(h), _token_url(h, tenant), client_id)
    data.update(form)
    with _http(h) as client:
        return client.post(_token_url(h, tenant), data=data)


def _assert_catalog(response: httpx.Response, name: str, **fmt: str) -> None:
    row = catalog.entry(name)
    body = response.json()
    assert response.status_code == row.status
    assert body["error"] == row.oauth_error
    assert body["error_codes"] == [int(row.code.removeprefix("AADSTS"))]
    assert body["error_description"].split("\r\n")[0] == row.render(**fmt)
    assert body["error_uri"].endswith(row.code.removeprefix("AADSTS"))
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert body[key]


@pytest.mark.parametrize("thumbprint", [True, False], ids=["RS256-x5t", "PS256-x5t#S256"])
def test_msal_gets_app_tokens_with_the_registered_certificate(harness: Harness, harness_env, thumbprint: bool) -> None:
    app = _msal(harness, _cert(harness), thumbprint=thumbprint)
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    claims = unverified_claims(result["access_token"])
    sender = harness.scenario.sender
    assert claims.audience == "https://graph.microsoft.com"
    assert set(claims.roles) == {"Mail.Send", "Mail.ReadWrite", "Mail.ReadBasic"}
    assert (claims.app_id, claims.object_id, claims.tenant_id) == (sender.client_id, sender.service_principal_id, harness.scenario.tenant_id)
    assert claims.raw["appidacr"] == "2" and claims.raw["idtyp"] == "app" and claims.raw["ver"] == "1.0"
    assert claims.raw["iss"] == f"https://sts.windows.net/{harness.scenario.tenant_id}/"
    assert claims.expires_at - claims.raw["iat"] == harness.scenario.token_lifetime_s
    smtp = app.acquire_token_for_client([SMTP_SCOPE])
    assert unverified_claims(smtp["access_token"]).roles == ("SMTP.SendAsApp",)
    # tokens verify against the harness's own key, for the right resource only
    assert harness.runtime.verify(result["access_token"], "graph").app_id == sender.client_id
    before = harness.state.count("entra", "POST /{tenant}/oauth2/v2.0/token")
    assert app.acquire_token_for_client([GRAPH_SCOPE])["token_source"] == "cache"
    assert harness.state.count("entra", "POST /{tenant}/oauth2/v2.0/token") == before


def test_repeated_assertion_is_accepted(harness: Harness) -> None:
    assertion = _assertion(_cert(harness), _token_url(harness), harness.scenario.sender.client_id)
    assert _post(harness, client_assertion=assertion).status_code == 200
    assert _post(harness, client_assertion=assertion).status_code == 200  # MSAL reuses assertions


def test_wrong_certificate_is_700027(harness: Harness, harness_env) -> None:
    stranger = make_app_certificate("CN=outbox-sender")
    result = _msal(harness, stranger).acquire_token_for_client([GRAPH_SCOPE])
    assert result["error_codes"] == [700027]
    _assert_catalog(_post(harness, client_assertion=_assertion(stranger, _token_url(harness), harness.scenario.sender.client_id)), "entra.invalid_signature")


def test_signature_made_with_another_key_under_a_registered_thumbprint_is_700027(harness: Harness) -> None:
    cert = _cert(harness)
    other = make_app_certificate()
    forged = jwt.encode(
        {"aud": _token_url(harness), "iss": harness.scenario.sender.client_id, "sub": harness.scenario.sender.client_id,
         "jti": "x", "nbf": time.time(), "exp": time.time() + 600},
        other.private_key, algorithm="RS256", headers={"x5t": cert.x5t},
    )
    _assert_catalog(_post(harness, client_assertion=forged), "entra.invalid_signature")


@pytest.mark.parametrize("line", [{"expired": True}, {"registered": False}], ids=["expired", "not-uploaded"])
def test_certificate_problems_are_700027(harness: Harness, harness_env, line) -> None:
    harness.apply_scenario({"apps": {"outbox-sender": {"certificates": {"current": line}}}})
    cert = _cert(harness)
    if line.get("expired"):
        assert cert.is_expired()
    result = _msal(harness, cert).acquire_token_for_client([GRAPH_SCOPE])
    assert result.get("error_codes") == [700027], result
    _assert_catalog(_post(harness), "entra.invalid_signature")


def test_unknown_app_is_700016(harness: Harness, harness_env) -> None:
    client_id = str(uuid.uuid4())
    result = _msal(harness, _cert(harness), client_id=client_id).acquire_token_for_client([GRAPH_SCOPE])
    assert result["error_codes"] == [700016]
    _assert_catalog(_post(harness, client_id=client_id), "entra.app_not_found", client_id=client_id, tenant=harness.scenario.tenant_id)


def test_unknown_tenant_is_90002_at_discovery_and_token(harness: Harness, harness_env) -> None:
    tenant = str(uuid.uuid4())
    with pytest.raises(ValueError, match="Unable to get authority configuration"):  # MSAL on a 400
        _msal(harness, _cert(harness), tenant=tenant)
    with _http(harness) as client:
        discovery = client.get(f"{harness.url('entra')}/{tenant}/v2.0/.well-known/openid-configuration")
    row = catalog.entry("entra.tenant_not_found")
    assert discovery.status_code == 400 and discovery.json()["error"] == "invalid_tenant"
    assert discovery.json()["error_description"].startswith(row.render(tenant=tenant))
    _assert_catalog(_post(harness, tenant=tenant), "entra.tenant_not_found", tenant=tenant)


def test_tenant_domain_is_accepted_as_authority(harness: Harness, harness_env) -> None:
    app = _msal(harness, _cert(harness), tenant=harness.scenario.tenant_domain)
    assert "access_token" in app.acquire_token_for_client([GRAPH_SCOPE])


def test_scope_without_default_is_1002012(harness: Harness, harness_env) -> None:
    scope = "https://outlook.office365.com/SMTP.SendAsApp"
    result = _msal(harness, _cert(harness)).acquire_token_for_client([scope])
    assert result["error_codes"] == [1002012]
    _assert_catalog(_post(harness, scope=scope), "entra.scope_not_default", scope=scope)


def test_assertion_outside_its_time_window_is_700024(harness: Harness) -> None:
    past = time.time() - 3600
    assertion = _assertion(_cert(harness), _token_url(harness), harness.scenario.sender.client_id, now=past)
    response = _post(harness, client_assertion=assertion)
    fmt = {
        "now": response.json()["error_description"].split("Current time: ")[1].split(",")[0],
        "nbf": dt.datetime.fromtimestamp(past, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "exp": dt.datetime.fromtimestamp(past + 600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
    }
    _assert_catalog(response, "entra.assertion_expired", **fmt)


def test_assertion_for_another_audience_is_refused(harness: Harness) -> None:
    assertion = _assertion(_cert(harness), "https://login.microsoftonline.com/x/oauth2/v2.0/token", harness.scenario.sender.client_id)
    response = _post(harness, client_assertion=assertion)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_missing_consent_gives_a_token_without_roles(harness: Harness, harness_env) -> None:
    harness.apply_scenario({"apps": {"outbox-sender": {"exchange_consent": False}}})
    result = _msal(harness, _cert(harness)).acquire_token_for_client([SMTP_SCOPE])
    claims = unverified_claims(result["access_token"])
    assert "roles" not in claims.raw and claims.audience == "https://outlook.office365.com"


def test_keyvault_claims_parameter_is_accepted(harness: Harness) -> None:
    response = _post(harness, scope=harness.runtime.keyvault_resource + "/.default",
                     claims='{"access_token":{"xms_cc":{"values":["CP1"]}}}')
    assert response.status_code == 200
    assert unverified_claims(response.json()["access_token"]).audience == harness.runtime.keyvault_resource


def test_jwks_verifies_issued_tokens(harness: Harness) -> None:
    token = _post(harness).json()["access_token"]
    with _http(harness) as client:
        keys = client.get(f"{harness.url('entra')}/{harness.scenario.tenant_id}/discovery/v2.0/keys").json()
    key = jwt.PyJWK(keys["keys"][0])
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://graph.microsoft.com")
    assert claims["tid"] == harness.scenario.tenant_id
