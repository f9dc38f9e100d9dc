"""The app certificate from (fake) Key Vault: PFX and PEM, caching, rotation, classified failures."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.certificates import CertificateProvider
from shared.errors import OutboxError
from tests.integration.transport_support import settings_for

SECRET_GET = "GET /secrets/{name}/"




def vault_reads(fakes) -> int:
    return fakes.state.count("keyvault", SECRET_GET)


def provider(fakes, **overrides: str) -> CertificateProvider:
    return CertificateProvider(settings_for(fakes, **overrides))


def test_pfx_from_key_vault_matches_the_registered_certificate_and_is_cached(fakes):
    certs = provider(fakes)
    expected = fakes.runtime.credentials.vault_latest()
    material = certs.get()
    assert material.thumbprint_sha1 == expected.certificate.thumbprint
    assert material.version == expected.version
    assert material.not_after == expected.certificate.not_after
    assert "BEGIN PRIVATE KEY" in material.private_key_pem
    reads = vault_reads(fakes)
    assert certs.get() is material  # cached: the vault is not asked again
    assert vault_reads(fakes) == reads
    certs.close()


def test_pem_secret_gives_the_same_certificate(fakes):
    name = fakes.scenario.keyvault.certificate_name
    pem = provider(fakes, OUTBOX_CERT_NAME=f"{name}-pem").get()
    pfx = provider(fakes).get()
    assert pem.thumbprint_sha1 == pfx.thumbprint_sha1
    assert pem.public_cert_pem == pfx.public_cert_pem


def test_rotation_is_picked_up_after_invalidate(own_fakes):
    fakes = own_fakes
    certs = provider(fakes)
    before = certs.get()
    rotated = fakes.rotate_certificate(keep_old=False)
    assert certs.get() is before  # not re-read until told or due
    certs.invalidate()
    after = certs.get()
    assert after.thumbprint_sha1 == rotated.certificate.thumbprint != before.thumbprint_sha1
    assert after.version == rotated.version


def test_refresh_period_re_reads_the_vault(fakes):
    now = [0.0]
    certs = CertificateProvider(settings_for(fakes, OUTBOX_CERT_REFRESH_S="60"), clock=lambda: now[0])
    certs.get()
    reads = vault_reads(fakes)
    now[0] = 59
    certs.get()
    assert vault_reads(fakes) == reads
    now[0] = 61
    certs.get()
    assert vault_reads(fakes) == reads + 1


def test_key_vault_down_is_transient_and_a_valid_cached_certificate_keeps_working(fakes):
    now = [0.0]
    certs = CertificateProvider(settings_for(fakes, OUTBOX_CERT_REFRESH_S="60"), clock=lambda: now[0])
    cached = certs.get()
    fakes.set_fault(service="keyvault", action="down")
    now[0] = 120  # a scheduled re-read fails: the cached, valid certificate is kept
    assert certs.get() is cached
    certs.invalidate()  # a forced re-read must not silently keep the old one
    with pytest.raises(OutboxError) as info:
        certs.get()
    err = info.value
    assert (err.category, err.transport, err.retryable, err.request_sent) == ("transient", "keyvault", True, False)


def test_first_read_with_key_vault_down_is_transient(fakes):
    fakes.set_fault(service="keyvault", action="down")
    with pytest.raises(OutboxError) as info:
        provider(fakes).get()
    assert info.value.category == "transient"
    assert info.value.retryable


def test_missing_secret_is_config_naming_it(fakes):
    with pytest.raises(OutboxError) as info:
        provider(fakes, OUTBOX_CERT_NAME="no-such-cert").get()
    err = info.value
    assert (err.category, err.status, err.retryable) == ("config", 404, False)
    assert "no-such-cert" in err.detail


def test_identity_without_vault_role_is_permission(fakes):
    fakes.apply_scenario({"managed_identity": {"keyvault_role": "none"}})
    with pytest.raises(OutboxError) as info:
        provider(fakes).get()
    err = info.value
    assert (err.category, err.status, err.transport) == ("permission", 403, "keyvault")
    assert err.hint


def test_expired_certificate_is_refused_with_its_date(fakes):
    fakes.apply_scenario({"apps": {"outbox-sender": {"certificates": {"current": {"expired": True}}}}})
    expected = fakes.runtime.credentials.vault_latest().certificate
    assert expected.is_expired()
    with pytest.raises(OutboxError) as info:
        provider(fakes).get()
    err = info.value
    assert err.category == "config"
    assert err.code == "outbox.certificate_expired"
    assert expected.not_after.date().isoformat() in err.detail


def test_certificate_near_expiry_is_re_read_sooner(fakes):
    clock = [0.0]
    not_after = fakes.runtime.credentials.vault_latest().certificate.not_after
    wall = [not_after - dt.timedelta(hours=1)]  # one hour of validity left, margin one day
    settings = settings_for(fakes, OUTBOX_CERT_REFRESH_S="3600", OUTBOX_CERT_EXPIRY_MARGIN_S="86400")
    certs = CertificateProvider(settings, clock=lambda: clock[0], now=lambda: wall[0])
    certs.get()
    reads = vault_reads(fakes)
    clock[0] = 359  # a tenth of the remaining hour is 360 s
    certs.get()
    assert vault_reads(fakes) == reads
    clock[0] = 361
    certs.get()
    assert vault_reads(fakes) == reads + 1
