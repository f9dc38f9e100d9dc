"""The harness PKI: app certificates in every form outbox reads, and a TLS chain clients can trust."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.pki import TestPKI, load_app_certificate_pfx, make_app_certificate


def test_app_certificate_forms_agree() -> None:
    cert = make_app_certificate("CN=outbox-sender")
    key, loaded, _ = pkcs12.load_key_and_certificates(base64.b64decode(cert.pfx_base64()), None)
    assert loaded == cert.certificate
    assert key is not None and key.key_size == 2048
    assert cert.thumbprint == hashlib.sha1(cert.cert_der).hexdigest().upper()
    padded = base64.urlsafe_b64encode(bytes.fromhex(cert.thumbprint)).decode()
    assert padded.rstrip("=") == cert.x5t
    assert base64.urlsafe_b64decode(cert.x5t_s256 + "=") == hashlib.sha256(cert.cert_der).digest()
    assert cert.pem_bundle().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert x509.load_pem_x509_certificate(cert.cert_pem) == cert.certificate
    assert load_app_certificate_pfx(cert.pfx_base64()).thumbprint == cert.thumbprint
    assert cert.certificate.issuer == cert.certificate.subject  # self-signed


def test_expired_certificate_can_be_made() -> None:
    now = dt.datetime.now(dt.UTC)
    cert = make_app_certificate(not_after=now - dt.timedelta(days=1))
    assert cert.is_expired()
    assert cert.not_before < cert.not_after < now


def test_tls_chain_is_trusted_through_the_bundle(tmp_path) -> None:
    pki = TestPKI.in_directory(tmp_path, extra_names=["vault.harness.test"])
    bundle = pki.bundle_path.read_bytes()
    assert pki.ca_pem in bundle and bundle.count(b"BEGIN CERTIFICATE") > 10  # public roots kept

    server_ctx = pki.server_ssl_context()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(pki.bundle_path))
    with socket.create_connection(("127.0.0.1", port)) as raw, client_ctx.wrap_socket(
        raw, server_hostname="127.0.0.1"
    ) as tls:
        assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()

    again = TestPKI.in_directory(tmp_path)
    assert again.ca_pem == pki.ca_pem  # a restarted harness keeps its CA
