"""Fake managed-identity endpoint, driven by azure-identity unchanged (App Service 2019-08-01 protocol)."""

from __future__ import annotations

import ssl

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from harness.tokens import unverified_claims
from harness.up import Harness


def _ca(h: Harness) -> str:
    return str(h.ca_bundle)


@pytest.mark.parametrize("kind", ["managed", "default"])
def test_credential_gets_a_token_for_the_function_identity(harness: Harness, harness_env, kind: str) -> None:
    identity = harness.scenario.managed_identity
    if kind == "managed":
        credential = ManagedIdentityCredential(client_id=identity.client_id, connection_verify=_ca(harness))
    else:
        credential = DefaultAzureCredential(managed_identity_client_id=identity.client_id, connection_verify=_ca(harness))
    resource = harness.runtime.keyvault_resource
    token = credential.get_token(resource + "/.default")
    claims = harness.runtime.verify(token.token, "keyvault")
    assert (claims.app_id, claims.object_id) == (identity.client_id, identity.object_id)
    assert token.expires_on == claims.expires_at
    assert harness.state.count("msi", "status:200") == 1


def _get(h: Harness, **kwargs) -> httpx.Response:
    with httpx.Client(verify=ssl.create_default_context(cafile=_ca(h))) as client:
        return client.get(h.identity_endpoint, **kwargs)


def test_identity_header_is_enforced(harness: Harness) -> None:
    params = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
    assert _get(harness, params=params).status_code == 401
    assert _get(harness, params=params, headers={"X-IDENTITY-HEADER": "guess"}).status_code == 401
    ok = _get(harness, params=params, headers={"X-IDENTITY-HEADER": harness.identity_header})
    body = ok.json()
    assert ok.status_code == 200
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["resource"] == "https://vault.azure.net" and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) == unverified_claims(body["access_token"]).expires_at


def test_unknown_identity_is_refused(harness: Harness, harness_env) -> None:
    credential = ManagedIdentityCredential(client_id="00000000-0000-0000-0000-00000000dead", connection_verify=_ca(harness))
    with pytest.raises(ClientAuthenticationError):
        credential.get_token("https://vault.azure.net/.default")
