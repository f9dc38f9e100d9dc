"""Fake Key Vault driven by azure-keyvault-secrets + azure-identity unchanged (challenge check left ON)."""

from __future__ import annotations

import base64

import msal
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.up import Harness
from shared import catalog


def _client(h: Harness) -> SecretClient:
    ca = str(h.ca_bundle)
    credential = ManagedIdentityCredential(client_id=h.scenario.managed_identity.client_id, connection_verify=ca)
    return SecretClient(h.keyvault_url, credential, connection_verify=ca, retry_total=0)


def test_certificate_is_read_through_the_secrets_api(harness: Harness, harness_env) -> None:
    # The SDK caches challenges per vault URL for the whole process; start without one so the
    # first request really goes out unauthenticated.
    http_challenge_cache.clear()
    name = harness.scenario.keyvault.certificate_name
    secret = _client(harness).get_secret(name)
    key, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    registered = harness.runtime.credentials.certificate("outbox-sender")
    assert cert == registered.certificate and key is not None
    props = secret.properties
    assert props.content_type == "application/x-pkcs12" and props.managed is True
    assert props.key_id and props.key_id.endswith(f"/keys/{name}/{props.version}")
    assert props.enabled and props.expires_on == registered.not_after.replace(microsecond=0)
    pem = _client(harness).get_secret(name + "-pem")
    assert pem.properties.content_type == "application/x-pem-file"
    assert pem.value.startswith("-----BEGIN PRIVATE KEY-----") and registered.cert_pem.decode() in pem.value
    # the first request carried no token and got the challenge; the retry carried the MI token
    assert harness.state.count("keyvault", "status:401") >= 1


def test_unknown_secret_is_404(harness: Harness, harness_env) -> None:
    with pytest.raises(ResourceNotFoundError) as caught:
        _client(harness).get_secret("no-such-cert")
    row = catalog.entry("keyvault.secret_not_found")
    assert caught.value.status_code == row.status == 404
    assert caught.value.error.code == row.code
    assert caught.value.error.message == row.render(name="no-such-cert")


def test_identity_without_a_vault_role_is_403(harness: Harness, harness_env) -> None:
    harness.apply_scenario({"managed_identity": {"keyvault_role": "none"}})
    with pytest.raises(HttpResponseError) as caught:
        _client(harness).get_secret(harness.scenario.keyvault.certificate_name)
    row = catalog.entry("keyvault.forbidden")
    assert caught.value.status_code == row.status == 403
    assert caught.value.error.code == row.code
    assert caught.value.error.message.startswith("Caller is not authorized to perform action on resource.")
    assert harness.scenario.managed_identity.object_id in caught.value.error.message


def test_secrets_user_role_is_enough(harness: Harness, harness_env) -> None:
    harness.apply_scenario({"managed_identity": {"keyvault_role": "Key Vault Secrets User"}})
    assert _client(harness).get_secret(harness.scenario.keyvault.certificate_name).value


def _token_with(h: Harness, cert) -> dict:
    app = msal.ConfidentialClientApplication(
        h.scenario.sender.client_id, client_credential=cert.msal_credential(),
        authority=h.authority, instance_discovery=False,
    )
    return app.acquire_token_for_client(["https://graph.microsoft.com/.default"])


@pytest.mark.parametrize("keep_old", [True, False])
def test_rotation_makes_a_new_latest_version_registered_at_entra(harness: Harness, harness_env, keep_old: bool) -> None:
    name = harness.scenario.keyvault.certificate_name
    client = _client(harness)
    old = client.get_secret(name)
    rotated = harness.rotate_certificate(keep_old=keep_old)
    latest = client.get_secret(name)
    assert latest.properties.version == rotated.version != old.properties.version
    assert client.get_secret(name, old.properties.version).value == old.value  # old version still readable
    _, new_cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(latest.value), None)
    assert new_cert == rotated.certificate.certificate
    assert "access_token" in _token_with(harness, rotated.certificate)
    old_cert = harness.runtime.credentials.certificate("outbox-sender")
    old_result = _token_with(harness, old_cert)
    assert ("access_token" in old_result) is keep_old
    versions = [p.version for p in client.list_properties_of_secret_versions(name)]
    assert versions[-2:] == [old.properties.version, rotated.version]


def test_rotation_through_the_control_api(harness: Harness, harness_env) -> None:
    answer = harness.control.rotate_certificate()
    latest = _client(harness).get_secret(harness.scenario.keyvault.certificate_name)
    assert latest.properties.version == answer["version"]
