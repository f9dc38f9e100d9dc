"""The app registration's certificate, read from Key Vault and kept for the life of the process.

Key Vault stores a certificate's private key as a secret with the certificate's name; its value is a
base64 PFX (content type ``application/x-pkcs12``) or a PEM bundle (``application/x-pem-file``). The
function reads it with its managed identity (``DefaultAzureCredential``: ``AZURE_CLIENT_ID`` picks
the user-assigned identity in Azure; ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` point it at the
harness), turns it into MSAL's ``client_credential`` and caches it.

It is read again when ``OUTBOX_CERT_REFRESH_S`` has passed, when it is within
``OUTBOX_CERT_EXPIRY_MARGIN_S`` of expiry (so a rotated certificate is picked up before the old one
runs out), and when told to (``invalidate()``: Entra said the assertion's signature or thumbprint is
wrong, AADSTS700027). If a scheduled re-read fails while the cached certificate is still valid, the
cached one keeps working: a Key Vault outage does not stop mail.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.errors import ConfigError, OutboxError

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

PFX = "application/x-pkcs12"
PEM = "application/x-pem-file"

# Inside the expiry margin the vault is asked again after a tenth of the remaining lifetime (at most
# every OUTBOX_CERT_REFRESH_S, at least 1 s apart): more often as expiry nears, never per message.
_EXPIRING_RECHECK_FRACTION = 0.1


@dataclass(frozen=True)
class CertificateMaterial:
    """A certificate and its key in the forms MSAL needs. ``thumbprint_sha1`` is upper-case hex."""

    private_key_pem: str = field(repr=False)
    public_cert_pem: str
    thumbprint_sha1: str
    not_before: dt.datetime
    not_after: dt.datetime
    version: str | None
    subject: str = ""

    def msal_credential(self) -> dict[str, str]:
        """``client_credential`` for MSAL: with a thumbprint MSAL signs RS256 and sends ``x5t``/``x5c``."""
        return {
            "private_key": self.private_key_pem,
            "thumbprint": self.thumbprint_sha1,
            "public_certificate": self.public_cert_pem,
        }

    def expires_in(self, now: dt.datetime | None = None) -> float:
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds()


def parse_certificate(value: str, content_type: str | None, *, version: str | None = None) -> CertificateMaterial:
    """Key Vault secret value -> material. Raises ValueError saying what is wrong with the value."""
    text = value.strip()
    kind = (content_type or "").lower()
    if kind == PEM or (not kind and text.startswith("-----BEGIN")):
        key, cert = _from_pem(text.encode("ascii", "replace"))
    elif kind in (PFX, "") or "pkcs12" in kind:
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise ValueError("the secret is not base64 PFX data") from exc
        try:
            key, loaded, _ = pkcs12.load_key_and_certificates(raw, None)
        except ValueError as exc:
            raise ValueError(f"the PFX cannot be read without a password ({exc})") from exc
        if key is None or loaded is None:
            raise ValueError("the PFX holds no private key or no certificate")
        cert = loaded
    else:
        raise ValueError(f"unsupported content type {content_type!r} (expected {PFX} or {PEM})")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    subject = cert.subject.rfc4514_string()
    return CertificateMaterial(
        private_key_pem=key_pem,
        public_cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        thumbprint_sha1=cert.fingerprint(hashes.SHA1()).hex().upper(),  # Entra's x5t is SHA-1
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        version=version,
        subject=subject,
    )


def _from_pem(data: bytes) -> tuple[Any, x509.Certificate]:
    key = None
    certs: list[x509.Certificate] = []
    for block in _pem_blocks(data):
        if b"PRIVATE KEY-----" in block.split(b"\n", 1)[0]:
            key = serialization.load_pem_private_key(block, None)
        elif block.startswith(b"-----BEGIN CERTIFICATE-----"):
            certs.append(x509.load_pem_x509_certificate(block))
    if key is None or not certs:
        raise ValueError("the PEM needs a private key and a certificate")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A chain may follow; the app's certificate is the one that matches the key.
    for cert in certs:
        if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == public:
            return key, cert
    raise ValueError("no certificate in the PEM matches its private key")


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"-----BEGIN"):
            current = [line]
        elif line.startswith(b"-----END") and current:
            current.append(line)
            blocks.append(b"\n".join(current) + b"\n")
            current = []
        elif current:
            current.append(line)
    return blocks


class CertificateProvider:
    """Thread-safe cached access to the app certificate. ``get()`` is cheap after the first read."""

    def __init__(
        self,
        settings: Settings,
        credential: Any = None,
        *,
        secret_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._settings = settings
        self._credential = credential
        self._client = secret_client
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._material: CertificateMaterial | None = None
        self._read_at = 0.0
        self._stale = False
        self.reads = 0  # how many times the vault was asked (doctor and tests read it)

    # -- public ---------------------------------------------------------------------------------

    def get(self) -> CertificateMaterial:
        with self._lock:
            current = self._material
            if current is not None and not self._due(current):
                return current
            forced = self._stale or current is None
            try:
                fresh = self._read()
            except OutboxError as exc:
                if not forced and current is not None and current.expires_in(self._now()) > 0:
                    log.warning("certificate re-read failed, keeping version %s: %s", current.version, exc)
                    self._read_at = self._clock()  # try again after another refresh period
                    return current
                raise
            self._check_validity(fresh)
            if current is not None and fresh.thumbprint_sha1 != current.thumbprint_sha1:
                log.info(
                    "certificate rotated: %s (version %s) -> %s (version %s)",
                    current.thumbprint_sha1, current.version, fresh.thumbprint_sha1, fresh.version,
                )
            self._material, self._read_at, self._stale = fresh, self._clock(), False
            return fresh

    def invalidate(self) -> None:
        """Read the vault again on the next ``get()`` (Entra rejected the assertion: maybe rotated)."""
        with self._lock:
            self._stale = True

    def read_unchecked(self) -> CertificateMaterial:
        """Read the vault now, without the validity check or the cache: doctor shows an expired
        certificate's thumbprint and dates instead of only refusing it."""
        with self._lock:
            return self._read()

    @property
    def cached(self) -> CertificateMaterial | None:
        return self._material

    def close(self) -> None:
        for obj in (self._client, self._credential):
            closer = getattr(obj, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:  # closing is best effort at shutdown
                    log.debug("closing %r failed", obj, exc_info=True)

    # -- internals ------------------------------------------------------------------------------

    def _due(self, material: CertificateMaterial) -> bool:
        if self._stale:
            return True
        age = self._clock() - self._read_at
        if age >= self._settings.cert_refresh_s:
            return True
        remaining = material.expires_in(self._now())
        if remaining <= self._settings.cert_expiry_margin_s:
            recheck = max(1.0, min(self._settings.cert_refresh_s, remaining * _EXPIRING_RECHECK_FRACTION))
            return age >= recheck
        return False

    def _check_validity(self, material: CertificateMaterial) -> None:
        now = self._now()
        remaining = material.expires_in(now)
        if remaining <= 0:
            raise ConfigError(
                f"certificate {self._settings.cert_name!r} (version {material.version}, thumbprint "
                f"{material.thumbprint_sha1}) expired on {material.not_after.isoformat()}",
                code="outbox.certificate_expired",
                transport="keyvault",
                hint=(
                    f"renew the certificate in Key Vault {self._settings.keyvault_url} (same name), upload the "
                    "new public certificate to the app registration, and remove the expired one"
                ),
            )
        if material.not_before > now:
            raise ConfigError(
                f"certificate {self._settings.cert_name!r} (version {material.version}) is not valid before "
                f"{material.not_before.isoformat()}",
                code="outbox.certificate_not_yet_valid",
                transport="keyvault",
                hint="check the clock of this host and the certificate's validity period",
            )
        if remaining <= self._settings.cert_expiry_margin_s:
            log.warning(
                "certificate %s (thumbprint %s) expires on %s: rotate it in Key Vault",
                self._settings.cert_name, material.thumbprint_sha1, material.not_after.isoformat(),
            )

    def _secret_client(self) -> Any:
        if self._client is None:
            settings = self._settings
            if not settings.keyvault_url or not settings.cert_name:
                raise ConfigError(
                    "no Key Vault certificate is configured",
                    code="outbox.certificate_not_configured",
                    hint="set OUTBOX_KEYVAULT_URL and OUTBOX_CERT_NAME",
                )
            self._client, self._credential = vault_client(settings, self._credential)
        return self._client

    def _read(self) -> CertificateMaterial:
        name = self._settings.cert_name or ""
        client = self._secret_client()
        self.reads += 1
        try:
            secret = client.get_secret(name)
        except Exception as exc:
            raise classify_vault_failure(exc, self._settings) from exc
        value = secret.value or ""
        props = getattr(secret, "properties", None)
        content_type = getattr(props, "content_type", None)
        version = getattr(props, "version", None)
        try:
            return parse_certificate(value, content_type, version=version)
        except ValueError as exc:
            raise ConfigError(
                f"Key Vault secret {name!r} (version {version}) is not a usable certificate: {exc}",
                code="outbox.certificate_unreadable",
                transport="keyvault",
                hint=(
                    "import the certificate into Key Vault as a certificate (PFX without password or PEM "
                    "with its private key); OUTBOX_CERT_NAME names the certificate, read via the secrets API"
                ),
            ) from exc


def vault_client(settings: Settings, credential: Any = None) -> tuple[Any, Any]:
    """A SecretClient for OUTBOX_KEYVAULT_URL and the credential it uses (DefaultAzureCredential unless
    given: on Functions AZURE_CLIENT_ID selects the user-assigned identity; the CLI uses the operator's)."""
    from azure.keyvault.secrets import SecretClient

    transport: dict[str, Any] = {
        # azure-core waits 300 s by default; a vault that does not answer must fail like any
        # other service, and one quick retry covers a blip: the pipeline re-queues the rest.
        "connection_timeout": min(10.0, settings.http_timeout_s),
        "read_timeout": settings.http_timeout_s,
        "retry_total": 1,
        "retry_backoff_factor": 0.2,
    }
    if settings.ca_bundle:
        transport["connection_verify"] = settings.ca_bundle
    if credential is None:
        from azure.identity import DefaultAzureCredential

        # Nothing here turns the SDK's challenge-resource domain check off.
        credential = DefaultAzureCredential(**transport)
    return SecretClient(settings.keyvault_url or "", credential, **transport), credential


def classify_vault_failure(exc: Exception, settings: Settings) -> OutboxError:
    from azure.core.exceptions import HttpResponseError

    from shared import classify

    if isinstance(exc, HttpResponseError) and exc.status_code is not None and exc.response is not None:
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or ""
        message = getattr(error, "message", None) or exc.message or str(exc)
        err = classify.classify_keyvault_error(exc.status_code, code, message)
        if exc.status_code == 404 and settings.cert_name and settings.cert_name not in (err.detail or ""):
            err = err.replace(detail=f"secret {settings.cert_name!r} in {settings.keyvault_url}: {err.detail}")
        return err
    # No answer from the vault, or the managed identity gave no token (ClientAuthenticationError
    # without a response): either way the secret was never read.
    return classify.classify_transport_exception(exc, transport="keyvault", request_sent=False)
