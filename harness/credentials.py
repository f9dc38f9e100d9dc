"""The certificates a scenario's apps own: generated once, shared by the fake Entra and the fake vault.

Entra knows the public keys registered on each app; Key Vault holds versions of one certificate (with
private key). Rotation creates a new version in the vault and registers its key on the app, like an admin
uploading the renewed certificate (optionally keeping the old key valid, as Entra allows several keys).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass, field

from harness.pki import AppCertificate, make_app_certificate
from harness.scenario import AppRegistration, CertificateSpec, Scenario


@dataclass(frozen=True)
class VaultVersion:
    version: str
    certificate: AppCertificate
    created: dt.datetime
    enabled: bool = True


@dataclass
class _Generated:
    spec: CertificateSpec
    certificate: AppCertificate


@dataclass
class CertificateStore:
    """Thread-safe: the control API rotates from the loop thread, tests read from theirs."""

    _generated: dict[tuple[str, str], _Generated] = field(default_factory=dict)
    _extra_keys: dict[str, list[AppCertificate]] = field(default_factory=dict)
    _revoked: dict[str, set[str]] = field(default_factory=dict)
    _vault: list[VaultVersion] = field(default_factory=list)
    _vault_source: tuple[str, str] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> CertificateStore:
        store = cls()
        store.apply(scenario)
        return store

    def apply(self, scenario: Scenario) -> None:
        """Generate what the scenario describes; keep certificates whose spec did not change."""
        with self._lock:
            wanted: set[tuple[str, str]] = set()
            for app in scenario.apps:
                for spec in app.certificates:
                    key = (app.name, spec.label)
                    wanted.add(key)
                    current = self._generated.get(key)
                    if current is None or _material_changed(current.spec, spec):
                        self._generated[key] = _Generated(spec, _generate(app, spec))
                    else:
                        current.spec = spec
            for key in set(self._generated) - wanted:
                del self._generated[key]
            source = (scenario.keyvault.app, scenario.keyvault.certificate)
            certificate = self._generated[source].certificate
            if (
                self._vault_source != source
                or not self._vault
                or not any(v.certificate is certificate for v in self._vault)
            ):
                self._vault = [VaultVersion(_new_version(), certificate, dt.datetime.now(dt.UTC))]
                self._vault_source = source

    def undo_rotations(self) -> None:
        """Back to the scenario's own certificates (between tests): rotated versions, extra keys and
        revocations are forgotten, so one test's rotation cannot break the next test's token."""
        with self._lock:
            self._extra_keys.clear()
            self._revoked.clear()
            del self._vault[1:]

    def certificate(self, app_name: str, label: str = "current") -> AppCertificate:
        with self._lock:
            return self._generated[(app_name, label)].certificate

    def registered_keys(self, app: AppRegistration) -> list[AppCertificate]:
        """Public keys Entra holds for the app (expired ones included: Entra rejects them when used)."""
        with self._lock:
            keys = [
                self._generated[(app.name, spec.label)].certificate
                for spec in app.certificates
                if spec.registered and (app.name, spec.label) in self._generated
            ]
            keys += self._extra_keys.get(app.name, [])
            revoked = self._revoked.get(app.name, set())
            return [k for k in keys if k.thumbprint not in revoked]

    # -- the vault ----------------------------------------------------------------------------------------
    def vault_versions(self) -> list[VaultVersion]:
        with self._lock:
            return list(self._vault)

    def vault_latest(self) -> VaultVersion:
        with self._lock:
            return self._vault[-1]

    def vault_version(self, version: str) -> VaultVersion | None:
        with self._lock:
            return next((v for v in self._vault if v.version == version), None)

    def rotate(
        self, scenario: Scenario, *, keep_old: bool = True, register: bool = True, valid_days: float = 365
    ) -> VaultVersion:
        """A new certificate version becomes the vault's latest; its key is registered on the app."""
        with self._lock:
            app = scenario.app(scenario.keyvault.app)
            certificate = make_app_certificate(f"CN={app.name}", valid_days=valid_days)
            version = VaultVersion(_new_version(), certificate, dt.datetime.now(dt.UTC))
            if not keep_old:
                self._revoked.setdefault(app.name, set()).update(
                    v.certificate.thumbprint for v in self._vault
                )
            if register:
                self._extra_keys.setdefault(app.name, []).append(certificate)
            self._vault.append(version)
            return version


def _material_changed(old: CertificateSpec, new: CertificateSpec) -> bool:
    return (old.valid_days, old.starts_days_ago, old.expired) != (
        new.valid_days,
        new.starts_days_ago,
        new.expired,
    )


def _generate(app: AppRegistration, spec: CertificateSpec) -> AppCertificate:
    now = dt.datetime.now(dt.UTC)
    if spec.expired:
        not_after = now - dt.timedelta(days=1)
        not_before = not_after - dt.timedelta(days=max(spec.valid_days, 1))
    else:
        not_before = now - dt.timedelta(days=spec.starts_days_ago, minutes=10)
        not_after = not_before + dt.timedelta(days=spec.valid_days)
    return make_app_certificate(f"CN={app.name}", not_before=not_before, not_after=not_after)


def _new_version() -> str:
    return secrets.token_hex(16)
