"""App-only tokens from the fake Entra ID with the Key Vault certificate: scopes, caching, expiry,
rotation (AADSTS700027) and classified failures."""

from __future__ import annotations

import threading

import pytest

from shared.certificates import CertificateProvider
from shared.errors import OutboxError
from shared.http import build_client
from shared.tokens import TokenProvider, decode_claims
from tests.integration.transport_support import settings_for

TOKEN_POST = "POST /{tenant}/oauth2/v2.0/token"




class Bundle:
    def __init__(self, fakes, **overrides: str) -> None:
        self.settings = settings_for(fakes, **overrides)
        self.http = build_client(self.settings)
        self.certificates = CertificateProvider(self.settings)
        self.tokens = TokenProvider(self.settings, self.certificates, http_client=self.http)

    def close(self) -> None:
        self.certificates.close()
        self.http.close()


@pytest.fixture
def make(request):
    made: list[Bundle] = []

    def factory(fakes, **overrides: str) -> Bundle:
        bundle = Bundle(fakes, **overrides)
        made.append(bundle)
        return bundle

    yield factory
    for bundle in made:
        bundle.close()


def token_requests(fakes) -> int:
    return fakes.state.count("entra", TOKEN_POST)


def test_each_scope_gets_its_audience_and_roles(fakes, make):
    b = make(fakes)
    graph = b.tokens.claims(b.settings.graph_scope)
    assert graph["aud"] == "https://graph.microsoft.com"
    assert "Mail.Send" in graph["roles"]
    assert graph["appid"] == fakes.scenario.sender.client_id
    assert graph["appidacr"] == "2"  # certificate credential
    exchange = b.tokens.claims(b.settings.smtp_scope)
    assert exchange["aud"] == "https://outlook.office365.com"
    assert exchange["roles"] == ["SMTP.SendAsApp"]


def test_second_call_makes_no_request(fakes, make):
    b = make(fakes)
    first = b.tokens.token(b.settings.graph_scope)
    requests, calls = token_requests(fakes), b.tokens.acquisitions
    assert b.tokens.token(b.settings.graph_scope) is first
    assert token_requests(fakes) == requests
    assert b.tokens.acquisitions == calls  # not even a trip into MSAL


def test_concurrent_first_calls_share_one_request(fakes, make):
    b = make(fakes)
    b.certificates.get()  # the vault read is not what this test counts
    before = token_requests(fakes)
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def worker() -> None:
        barrier.wait()
        seen.append(b.tokens.token(b.settings.graph_scope).token)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 8 and len(set(seen)) == 1
    assert token_requests(fakes) == before + 1


def test_token_within_the_expiry_margin_is_never_used(fakes, make):
    # Tokens living 2 minutes are always inside the 5-minute margin: each call gets a fresh one.
    fakes.apply_scenario({"token_lifetime_s": 120})
    b = make(fakes)
    one = b.tokens.token(b.settings.graph_scope)
    two = b.tokens.token(b.settings.graph_scope)
    assert one.token != two.token
    assert decode_claims(two.token)["exp"] - decode_claims(two.token)["iat"] <= 120


def test_invalidate_forces_a_fresh_token(fakes, make):
    b = make(fakes)
    old = b.tokens.token(b.settings.graph_scope)
    before = token_requests(fakes)
    b.tokens.invalidate(b.settings.graph_scope, old.token)
    new = b.tokens.token(b.settings.graph_scope)
    assert new.token != old.token
    assert token_requests(fakes) == before + 1


def test_rotated_certificate_is_picked_up_after_aadsts700027(own_fakes, make):
    fakes = own_fakes
    b = make(fakes)
    b.tokens.token(b.settings.graph_scope)
    old_thumbprint = b.certificates.cached.thumbprint_sha1
    rotated = fakes.rotate_certificate(keep_old=False)  # Entra no longer knows the old key
    b.tokens.invalidate(b.settings.graph_scope)
    token = b.tokens.token(b.settings.graph_scope)
    assert decode_claims(token.token)["aud"] == "https://graph.microsoft.com"
    assert b.certificates.cached.thumbprint_sha1 == rotated.certificate.thumbprint != old_thumbprint
    counters = fakes.state.counters()["entra"]
    assert counters.get("status:401", 0) == 1  # the old assertion, refused once


def test_certificate_rotated_in_key_vault_is_picked_up_after_aadsts700024(own_fakes, make):
    # AADSTS700024 (the assertion is outside its valid time range) also re-reads the certificate: one
    # rotated in Key Vault meanwhile signs the retry. (With the same certificate the retry cannot help:
    # MSAL reuses its assertion and answers the identical request from its 60 s cache of 400 errors.)
    fakes = own_fakes
    b = make(fakes)
    b.tokens.token(b.settings.graph_scope)
    old_thumbprint = b.certificates.cached.thumbprint_sha1
    rotated = fakes.rotate_certificate(keep_old=True)
    b.tokens.invalidate(b.settings.graph_scope)
    before = token_requests(fakes)
    fakes.set_fault(service="entra", operation="token", catalog="entra.assertion_expired", times=1)
    token = b.tokens.token(b.settings.graph_scope)
    assert decode_claims(token.token)["aud"] == "https://graph.microsoft.com"
    assert b.certificates.cached.thumbprint_sha1 == rotated.certificate.thumbprint != old_thumbprint
    assert token_requests(fakes) == before + 2  # refused with 700024, then accepted


def test_certificate_not_uploaded_to_the_app_is_auth_error_after_one_re_read(fakes, make):
    fakes.apply_scenario({"apps": {"outbox-sender": {"certificates": {"current": {"registered": False}}}}})
    b = make(fakes)
    with pytest.raises(OutboxError) as info:
        b.tokens.token(b.settings.graph_scope)
    err = info.value
    assert (err.category, err.transport, err.code) == ("auth", "entra", "AADSTS700027")
    assert "upload" in err.hint.lower()
    assert b.certificates.reads == 2  # read, refused, re-read once, refused: stop
    assert token_requests(fakes) == 2


def test_unknown_tenant_is_config(fakes, make):
    b = make(fakes, OUTBOX_TENANT_ID="11111111-2222-3333-4444-555555555555")
    with pytest.raises(OutboxError) as info:
        b.tokens.token(b.settings.graph_scope)
    assert info.value.category == "config"
    assert "90002" in (info.value.code + info.value.detail)


def test_unknown_client_id_is_config(fakes, make):
    b = make(fakes, OUTBOX_CLIENT_ID="99999999-0000-4000-8000-000000000000")
    with pytest.raises(OutboxError) as info:
        b.tokens.token(b.settings.graph_scope)
    assert (info.value.category, info.value.code) == ("config", "AADSTS700016")


def test_entra_down_is_transient(fakes, make):
    b = make(fakes)
    b.certificates.get()
    fakes.set_fault(service="entra", action="down")
    with pytest.raises(OutboxError) as info:
        b.tokens.token(b.settings.graph_scope)
    err = info.value
    assert (err.category, err.transport, err.retryable) == ("transient", "entra", True)


def test_entra_temporarily_unavailable_is_transient(fakes, make):
    b = make(fakes)
    b.tokens.token(b.settings.smtp_scope)  # discovery done, the app exists
    fakes.set_fault(service="entra", catalog="entra.temporarily_unavailable", times=1)
    with pytest.raises(OutboxError) as info:
        b.tokens.token(b.settings.graph_scope)
    assert (info.value.category, info.value.retryable) == ("transient", True)
