"""The harness's fakes, talked to exactly as Microsoft's services are talked to, with the real clients:
azure-identity (managed identity) + SecretClient for the certificate, MSAL for tokens, httpx for Graph,
smtplib and aiosmtplib for Exchange SMTP. Expected shapes are written out from the reference
(m365-send-errors.md) and Microsoft's docs, not taken from outbox's catalog.
"""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import httpx
import jwt
import msal
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.up import Harness
from tests.contract.conftest import SENDER

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SMTP_SCOPE = "https://outlook.office365.com/.default"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
GRAPH_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\Z")
ENTRA_ERROR_KEYS = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id",
                    "error_uri"}


@dataclass
class App:
    client_id: str
    tenant_id: str
    credential: dict[str, str]
    authority: str

    def msal(self, **kwargs: Any) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            kwargs.pop("client_id", self.client_id), client_credential=self.credential,
            authority=kwargs.pop("authority", self.authority), instance_discovery=False, **kwargs)

    def token(self, scope: str) -> str:
        result = self.msal().acquire_token_for_client([scope])
        assert "access_token" in result, result
        return str(result["access_token"])


@pytest.fixture
def app(harness: Harness, harness_env: dict[str, str]) -> App:
    """The sending app as outbox's settings describe it, its certificate read from Key Vault with the
    function's managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER, AZURE_CLIENT_ID)."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    bundle = harness_env["OUTBOX_CA_BUNDLE"]
    credential = ManagedIdentityCredential(client_id=harness_env["AZURE_CLIENT_ID"], connection_verify=bundle)
    client = SecretClient(harness_env["OUTBOX_KEYVAULT_URL"], credential, connection_verify=bundle)
    secret = client.get_secret(harness_env["OUTBOX_CERT_NAME"])
    assert secret.properties.content_type == "application/x-pkcs12"
    key, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value or ""), None)
    assert key is not None and cert is not None
    client.close()
    credential.close()
    return App(
        client_id=harness_env["OUTBOX_CLIENT_ID"],
        tenant_id=harness_env["OUTBOX_TENANT_ID"],
        credential={
            "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),
            "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        },
        authority=f"{harness_env['OUTBOX_AUTHORITY_HOST']}/{harness_env['OUTBOX_TENANT_ID']}",
    )


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# -- Entra ID ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "aud", "role"), [
    (GRAPH_SCOPE, "https://graph.microsoft.com", "Mail.Send"),
    (SMTP_SCOPE, "https://outlook.office365.com", "SMTP.SendAsApp"),
])
def test_app_only_token_claims(app: App, scope: str, aud: str, role: str) -> None:
    c = claims(app.token(scope))
    assert c["aud"] in (aud, aud + "/")
    assert role in c["roles"] and "scp" not in c
    assert c["tid"] == app.tenant_id
    assert app.client_id in (c.get("appid"), c.get("azp"))
    assert c.get("appidacr", c.get("azpacr")) == "2"  # 2 = certificate
    assert all(isinstance(c[k], int) for k in ("iat", "nbf", "exp"))
    assert c["nbf"] <= c["iat"] + 1 and 3000 <= c["exp"] - c["iat"] <= 5400  # 60-90 min lifetimes
    assert c["ver"] in ("1.0", "2.0")
    assert c["iss"] == (f"https://sts.windows.net/{app.tenant_id}/" if c["ver"] == "1.0"
                        else f"{app.authority}/v2.0")


@pytest.mark.parametrize(("kind", "code"), [
    ("scope-not-default", 1002012),
    ("unknown-app", 700016),
])
def test_token_error_body_keys(app: App, kind: str, code: int) -> None:
    if kind == "scope-not-default":
        result = app.msal().acquire_token_for_client(["https://graph.microsoft.com/Mail.Send"])
    else:
        result = app.msal(client_id=str(uuid.uuid4())).acquire_token_for_client([GRAPH_SCOPE])
    assert set(result) >= ENTRA_ERROR_KEYS, sorted(result)
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}:")
    assert result["error"] in ("invalid_scope", "invalid_request", "unauthorized_client", "invalid_client")
    assert GUID.match(result["trace_id"]) and GUID.match(result["correlation_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", result["timestamp"])


# -- Graph ---------------------------------------------------------------------------------------------------


@pytest.fixture
def graph(harness: Harness, harness_env: dict[str, str]) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=harness_env["OUTBOX_CA_BUNDLE"])
    with httpx.Client(base_url=harness_env["OUTBOX_GRAPH_URL"], verify=ctx, timeout=15) as client:
        yield client


def send_mail(client: httpx.Client, token: str | None, *, mailbox: str = SENDER, body: dict | None = None,
              client_request_id: str | None = None) -> httpx.Response:
    headers = {"client-request-id": client_request_id or str(uuid.uuid4())}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = body or {"message": {"subject": "Hi", "body": {"contentType": "Text", "content": "Hi"},
                                   "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}]},
                       "saveToSentItems": True}
    return client.post(f"/v1.0/users/{mailbox}/sendMail", json=payload, headers=headers)


def assert_graph_error(response: httpx.Response, status: int, code: str, sent_client_request_id: str) -> dict:
    assert response.status_code == status
    assert GUID.match(response.headers["request-id"])
    assert response.headers["client-request-id"] == sent_client_request_id
    document = response.json()
    assert set(document) == {"error"}
    error = document["error"]
    assert set(error) == {"code", "message", "innerError"}
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    inner = error["innerError"]
    assert set(inner) >= {"date", "request-id", "client-request-id"}
    assert GRAPH_DATE.match(inner["date"])
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == sent_client_request_id
    return error


def test_send_mail_is_202_with_an_empty_body(app: App, graph: httpx.Client, harness: Harness) -> None:
    cid = str(uuid.uuid4())
    response = send_mail(graph, app.token(GRAPH_SCOPE), client_request_id=cid)
    assert response.status_code == 202 and response.content == b""
    assert GUID.match(response.headers["request-id"]) and response.headers["client-request-id"] == cid
    assert len(harness.deliveries(transport="graph")) == 1


def test_an_smtp_token_on_graph_is_401_invalid_audience(app: App, graph: httpx.Client, harness: Harness) -> None:
    cid = str(uuid.uuid4())
    error = assert_graph_error(send_mail(graph, app.token(SMTP_SCOPE), client_request_id=cid), 401,
                               "InvalidAuthenticationToken", cid)
    assert "Invalid audience" in error["message"]
    assert harness.deliveries() == []


def test_no_token_is_401(graph: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    assert_graph_error(send_mail(graph, None, client_request_id=cid), 401, "InvalidAuthenticationToken", cid)


def test_mailbox_outside_the_access_policy_is_403_raop(app: App, graph: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    error = assert_graph_error(send_mail(graph, app.token(GRAPH_SCOPE), mailbox="other@contoso.example",
                                         client_request_id=cid), 403, "ErrorAccessDenied", cid)
    assert error["message"].startswith("Access to OData is disabled")


def test_unknown_mailbox_is_404_error_invalid_user(app: App, graph: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    assert_graph_error(send_mail(graph, app.token(GRAPH_SCOPE), mailbox="nobody@contoso.example",
                                 client_request_id=cid), 404, "ErrorInvalidUser", cid)


def test_request_over_4_mb_is_413_with_graphs_json_body(app: App, graph: httpx.Client) -> None:
    """The reference assumed a plain-text 413; the body Graph was observed to send is JSON with code
    BadRequest (microsoft-graph-docs-contrib#682), and outbox classifies either as size."""
    from shared.classify import classify_graph_response

    big = base64.b64encode(b"\0" * (3 * 1024 * 1024 + 1)).decode()
    body = {"message": {"subject": "big", "body": {"contentType": "Text", "content": "x"},
                        "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}],
                        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "b.bin",
                                         "contentBytes": big}]}}
    response = send_mail(graph, app.token(GRAPH_SCOPE), body=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BadRequest"
    assert response.json()["error"]["message"] == "The maximum request length supported is 4MB."
    for reply in (response.content, b"Maximum request length exceeded.", b""):
        err = classify_graph_response(413, reply, {}, operation="send")
        assert (err.category, err.retryable) == ("size", False), reply


def test_throttled_429_carries_retry_after(app: App, graph: httpx.Client, harness: Harness) -> None:
    harness.apply_scenario({"limits": {"graph": {"requests_per_window": 1, "window_s": 30}}})
    token = app.token(GRAPH_SCOPE)
    assert send_mail(graph, token).status_code == 202
    cid = str(uuid.uuid4())
    response = send_mail(graph, token, client_request_id=cid)
    assert_graph_error(response, 429, "ApplicationThrottled", cid)
    assert int(response.headers["Retry-After"]) > 0


def test_service_unavailable_503_carries_retry_after(app: App, graph: httpx.Client, harness: Harness) -> None:
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", times=1)
    cid = str(uuid.uuid4())
    response = send_mail(graph, app.token(GRAPH_SCOPE), client_request_id=cid)
    assert_graph_error(response, 503, "serviceNotAvailable", cid)
    assert int(response.headers["Retry-After"]) > 0


# -- Exchange SMTP ------------------------------------------------------------------------------------------

AUTH_FAILED = re.compile(r"5\.7\.3 Authentication unsuccessful \[[^\]\s]+\]\Z")


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


@pytest.fixture
def smtp(harness: Harness, harness_env: dict[str, str]) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP(harness_env["OUTBOX_SMTP_HOST"], int(harness_env["OUTBOX_SMTP_PORT"]), timeout=15)
    yield client
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def tls(harness_env: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=harness_env["OUTBOX_CA_BUNDLE"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def test_auth_only_after_starttls_and_504_before(smtp: smtplib.SMTP, harness_env: dict[str, str], app: App) -> None:
    smtp.ehlo()
    assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
    code, text = smtp.docmd("AUTH", "XOAUTH2 " + base64.b64encode(b"x").decode())
    assert code == 504 and text.decode().startswith("5.7.4 Unrecognized authentication type")
    smtp.starttls(context=tls(harness_env))
    smtp.ehlo()
    assert "XOAUTH2" in smtp.esmtp_features["auth"].split()
    code, text = smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(SENDER, app.token(SMTP_SCOPE)))
    assert (code, text.decode()) == (235, "2.7.0 Authentication successful")


def test_a_graph_token_on_smtp_is_a_plain_535_5_7_3(smtp: smtplib.SMTP, harness_env: dict[str, str],
                                                     app: App) -> None:
    smtp.starttls(context=tls(harness_env))
    smtp.ehlo()
    # Bare AUTH XOAUTH2: Exchange answers an empty 334, then the client sends the string.
    code, text = smtp.docmd("AUTH", "XOAUTH2")
    assert (code, text) == (334, b"")
    code, text = smtp.docmd(base64.b64encode(xoauth2(SENDER, app.token(GRAPH_SCOPE)).encode()).decode())
    # Exchange Online never sends Gmail's 334 <base64 JSON> error challenge: straight to 535.
    assert code == 535 and AUTH_FAILED.match(text.decode()), text


def test_mailbox_with_smtp_auth_disabled_is_5_7_139(smtp: smtplib.SMTP, harness_env: dict[str, str], app: App,
                                                    harness: Harness) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    smtp.starttls(context=tls(harness_env))
    smtp.ehlo()
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(SENDER, app.token(SMTP_SCOPE)))
    assert caught.value.smtp_code == 535
    text = caught.value.smtp_error.decode()
    assert text.startswith("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox")
    assert "https://aka.ms/smtp_auth_disabled" in text


def test_tenant_with_smtp_auth_disabled_is_5_7_139(harness_env: dict[str, str], app: App, harness: Harness) -> None:
    harness.apply_scenario({"exchange": {"smtp_auth_enabled": False}})
    token = app.token(SMTP_SCOPE)

    async def run() -> aiosmtplib.SMTPAuthenticationError:
        client = aiosmtplib.SMTP(hostname=harness_env["OUTBOX_SMTP_HOST"], port=int(harness_env["OUTBOX_SMTP_PORT"]),
                                 start_tls=True, tls_context=tls(harness_env), timeout=15)
        await client.connect()
        try:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
                await client.auth_xoauth2(SENDER, token)
            return caught.value
        finally:
            await client.quit()

    error = asyncio.run(run())
    assert error.code == 535
    assert error.message.startswith(
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant")


def test_aiosmtplib_sends_with_xoauth2(harness_env: dict[str, str], app: App, harness: Harness) -> None:
    from email.message import EmailMessage

    token = app.token(SMTP_SCOPE)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, "ana@fabrikam.example", "aiosmtplib"
    message.set_content("hello")

    async def run() -> None:
        client = aiosmtplib.SMTP(hostname=harness_env["OUTBOX_SMTP_HOST"], port=int(harness_env["OUTBOX_SMTP_PORT"]),
                                 start_tls=True, tls_context=tls(harness_env), timeout=15)
        await client.connect()
        try:
            code, text = await client.auth_xoauth2(SENDER, token)
            assert (code, text) == (235, "2.7.0 Authentication successful")
            await client.send_message(message)
        finally:
            await client.quit()

    asyncio.run(run())
    [delivery] = harness.deliveries(transport="smtp")
    assert delivery.mailbox == SENDER and delivery.recipients == ("ana@fabrikam.example",)


def test_mail_from_without_auth_is_530_5_7_57(smtp: smtplib.SMTP, harness_env: dict[str, str]) -> None:
    smtp.starttls(context=tls(harness_env))
    smtp.ehlo()
    code, text = smtp.docmd("MAIL", f"FROM:<{SENDER}>")
    assert code == 530 and text.decode().startswith("5.7.57 Client not authenticated to send mail")


@pytest.mark.parametrize("patch", [
    {"apps": {"outbox-sender": {"smtp": {"service_principal_registered": False}}}},
    {"apps": {"outbox-sender": {"smtp": {"service_principal_object_id": "00000000-0000-0000-0000-000000000bad"}}}},
    {"apps": {"outbox-sender": {"smtp": {"full_access": ["noreply@contoso.example"]}}}},
    {"apps": {"outbox-sender": {"exchange_consent": False}}},
], ids=["no-service-principal", "wrong-object-id", "no-full-access", "no-consent"])
def test_535_5_7_3_is_the_same_answer_for_every_exchange_side_cause(harness_env: dict[str, str], app: App,
                                                                      harness: Harness, patch: dict) -> None:
    """design.md, "What doctor can know": the harness is as reticent as Exchange."""
    harness.apply_scenario(patch)
    token = app.token(SMTP_SCOPE)
    with smtplib.SMTP(harness_env["OUTBOX_SMTP_HOST"], int(harness_env["OUTBOX_SMTP_PORT"]), timeout=15) as client:
        client.starttls(context=tls(harness_env))
        client.ehlo()
        code, text = client.docmd("AUTH", "XOAUTH2 " + base64.b64encode(xoauth2(SENDER, token).encode()).decode())
    assert code == 535 and AUTH_FAILED.match(text.decode()), text
