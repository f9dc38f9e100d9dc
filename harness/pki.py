"""Certificates for the offline harness.

Two kinds live here:

* a test certificate authority (trustme) that signs the fakes' TLS server certificates, and a CA bundle
  (public roots + test CA) that outbox is pointed at through ``OUTBOX_CA_BUNDLE``;
* app certificates shaped like the ones ``New-SelfSignedCertificate`` or Key Vault make for an Entra app
  registration: RSA 2048, self-signed, with a configurable validity window so an expired one can be made.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

SERVER_IDENTITIES = ("127.0.0.1", "localhost")


def _b64url(data: bytes, *, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if padded else text.rstrip("=")


def public_roots_pem() -> bytes:
    """The public roots outbox would trust anyway (certifi's bundle, else the system's)."""
    try:
        import certifi

        return Path(certifi.where()).read_bytes()
    except ImportError:  # pragma: no cover - certifi ships with requests
        paths = ssl.get_default_verify_paths()
        for candidate in (paths.cafile, paths.openssl_cafile):
            if candidate and Path(candidate).exists():
                return Path(candidate).read_bytes()
    return b""


@dataclass(frozen=True)
class AppCertificate:
    """An app registration's certificate with its private key, and every form outbox or Entra reads."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate
    subject: str

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.UTC)) >= self.not_after

    @property
    def sha1(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA1())

    @property
    def sha256(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA256())

    @property
    def thumbprint(self) -> str:
        """Upper-case hex SHA-1, as the Azure portal and PowerShell show it."""
        return self.sha1.hex().upper()

    @property
    def x5t(self) -> str:
        """base64url SHA-1 without padding (compare after stripping '=': MSAL sends it padded)."""
        return _b64url(self.sha1)

    @property
    def x5t_s256(self) -> str:
        return _b64url(self.sha256)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def pem_bundle(self) -> bytes:
        """Key then certificate: the value Key Vault returns for a PEM certificate's secret."""
        return self.key_pem + self.cert_pem

    def pfx(self, password: bytes | None = None) -> bytes:
        encryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(
            self.subject.encode(), self.private_key, self.certificate, None, encryption
        )

    def pfx_base64(self, password: bytes | None = None) -> str:
        """The value of a Key Vault certificate's secret (content type application/x-pkcs12).

        Without a password the value is made once: PKCS#12 salts are random, and a vault returns the same
        bytes for a version every time."""
        if password is None:
            return self._stable_pfx_base64
        return base64.b64encode(self.pfx(password)).decode("ascii")

    @functools.cached_property
    def _stable_pfx_base64(self) -> str:
        return base64.b64encode(self.pfx()).decode("ascii")

    def msal_credential(self, *, with_thumbprint: bool = True) -> dict[str, str]:
        """MSAL's ``client_credential`` dict: thumbprint -> RS256/x5t, without -> PS256/x5t#S256."""
        credential = {
            "private_key": self.key_pem.decode("ascii"),
            "public_certificate": self.cert_pem.decode("ascii"),
        }
        if with_thumbprint:
            credential["thumbprint"] = self.thumbprint
        return credential

    def key_credential(self) -> dict[str, str]:
        """What Entra lists for an uploaded key (customKeyIdentifier is the SHA-1 thumbprint)."""
        return {
            "customKeyIdentifier": self.thumbprint,
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
            "startDateTime": self.not_before.isoformat().replace("+00:00", "Z"),
            "endDateTime": self.not_after.isoformat().replace("+00:00", "Z"),
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        }

    def write(self, directory: Path, stem: str) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "pem": directory / f"{stem}.pem",
            "cert": directory / f"{stem}.crt",
            "pfx": directory / f"{stem}.pfx",
        }
        paths["pem"].write_bytes(self.pem_bundle())
        paths["cert"].write_bytes(self.cert_pem)
        paths["pfx"].write_bytes(self.pfx())
        for path in (paths["pem"], paths["pfx"]):
            path.chmod(0o600)
        return paths


def make_app_certificate(
    subject: str = "CN=outbox-sender",
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    valid_days: float = 365,
    key: rsa.RSAPrivateKey | None = None,
) -> AppCertificate:
    """A self-signed RSA 2048 certificate like ``New-SelfSignedCertificate -KeySpec Signature``.

    ``not_after`` in the past gives an expired certificate (the keys still sign, so the failure shows up
    where it does in reality: at Entra, not in the client).
    """
    now = dt.datetime.now(dt.UTC)
    start = not_before or (now - dt.timedelta(minutes=10))
    end = not_after or (start + dt.timedelta(days=valid_days))
    if end <= start:
        start = end - dt.timedelta(days=1)
    private_key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cn = subject.removeprefix("CN=")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.CLIENT_AUTH, x509.ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return AppCertificate(private_key=private_key, certificate=certificate, subject=f"CN={cn}")


def load_app_certificate_pfx(data: bytes | str, password: bytes | None = None) -> AppCertificate:
    """Reads a PFX (raw or base64), e.g. a Key Vault secret value."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    key, cert, _ = pkcs12.load_key_and_certificates(raw, password)
    if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
        raise ValueError("the PFX does not hold an RSA key and a certificate")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cn[0].value if cn else ""
    name = value if isinstance(value, str) else value.decode()
    subject = f"CN={name}" if cn else cert.subject.rfc4514_string()
    return AppCertificate(private_key=key, certificate=cert, subject=subject)


def certificate_fingerprints(cert_pem_or_der: bytes) -> tuple[str, str]:
    """(x5t, x5t#S256) of a public certificate, unpadded base64url."""
    if cert_pem_or_der.lstrip().startswith(b"-----"):
        der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(serialization.Encoding.DER)
    else:
        der = cert_pem_or_der
    return _b64url(hashlib.sha1(der).digest()), _b64url(hashlib.sha256(der).digest())


class TestPKI:
    """The harness's certificate authority and the TLS material the fakes serve.

    ``TestPKI.in_directory(path)`` reuses a CA already written there, so a restarted harness keeps the
    bundle that running clients were given.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, ca: trustme.CA | None = None, *, extra_names: Iterable[str] = ()) -> None:
        self.ca = ca or trustme.CA(organization_name="outbox harness test CA")
        self.server_names: tuple[str, ...] = tuple(dict.fromkeys((*SERVER_IDENTITIES, *extra_names)))
        self._leaf = self.ca.issue_cert(
            *self.server_names,
            common_name="outbox harness",
            not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        )
        self.directory: Path | None = None

    @classmethod
    def in_directory(cls, directory: str | Path, *, extra_names: Iterable[str] = ()) -> TestPKI:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
        ca = None
        if ca_cert.exists() and ca_key.exists():
            try:
                ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
            except ValueError:
                ca = None
        pki = cls(ca, extra_names=extra_names)
        pki.write(directory)
        return pki

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    @property
    def server_chain_pem(self) -> bytes:
        return b"".join(blob.bytes() for blob in self._leaf.cert_chain_pems)

    @property
    def server_key_pem(self) -> bytes:
        return self._leaf.private_key_pem.bytes()

    def bundle_pem(self) -> bytes:
        """Public roots + the test CA: trusting it keeps real endpoints reachable too."""
        roots = public_roots_pem()
        if roots and not roots.endswith(b"\n"):
            roots += b"\n"
        return roots + self.ca_pem

    def server_ssl_context(self) -> ssl.SSLContext:
        """Server side TLS (https fakes and SMTP STARTTLS); TLS 1.2+ like Microsoft's endpoints."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._leaf.configure_cert(context)
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the test CA (for the harness's own control client and tests)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def write(self, directory: str | Path) -> dict[str, Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "ca": directory / "ca.pem",
            "ca_key": directory / "ca.key",
            "bundle": directory / "ca-bundle.pem",
            "server_cert": directory / "server.pem",
            "server_key": directory / "server.key",
        }
        paths["ca"].write_bytes(self.ca_pem)
        paths["ca_key"].write_bytes(self.ca.private_key_pem.bytes())
        paths["ca_key"].chmod(0o600)
        paths["bundle"].write_bytes(self.bundle_pem())
        paths["server_cert"].write_bytes(self.server_chain_pem)
        paths["server_key"].write_bytes(self.server_key_pem)
        paths["server_key"].chmod(0o600)
        self.directory = directory
        return paths

    @property
    def bundle_path(self) -> Path:
        if self.directory is None:
            raise RuntimeError("write() the PKI to a directory first")
        return self.directory / "ca-bundle.pem"
