"""Every catalog row, produced exactly as the fakes produce it, classifies back to that row.

Parametrized over ``entries()``: a new row without a way to build it here fails the suite.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import ssl
from collections.abc import Callable
from typing import ClassVar

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.identity import CredentialUnavailableError

from harness.replies import entra_error, graph_error, keyvault_error, smtp_reply
from shared.catalog import CatalogEntry, entries
from shared.classify import (
    classify_entra_error,
    classify_graph_response,
    classify_keyvault_error,
    classify_smtp_reply,
    classify_transport_exception,
)
from shared.errors import OutboxError

REQUEST_ID = "5b1b8c3e-0000-4000-8000-00000000abcd"
CLIENT_REQUEST_ID = "0f0e0d0c-1111-4222-8333-444455556666"
DATE = "2025-03-01T10:00:00"


def _assert_row(err: OutboxError, e: CatalogEntry, *, maybe_delivered: bool | None = None) -> None:
    assert err.catalog == e.name
    assert err.category == e.category
    assert err.retryable == e.retryable
    assert err.maybe_delivered == (e.maybe_delivered if maybe_delivered is None else maybe_delivered)
    assert err.hint == e.hint_for(e.parse(e.render()))
    assert err.hint
    assert err.max_retries == e.max_retries
    assert err.refresh_credentials == e.refresh_credentials


@pytest.mark.parametrize("e", list(entries("smtp")), ids=lambda e: e.name)
def test_smtp_row(e: CatalogEntry) -> None:
    code, text = smtp_reply(e.name)
    err = classify_smtp_reply(code, text, stage=e.stage or "data")
    _assert_row(err, e)
    assert err.transport == "smtp"
    assert err.status == code
    assert err.code == e.code
    assert text in err.detail


@pytest.mark.parametrize("e", list(entries("smtp")), ids=lambda e: e.name)
def test_smtp_row_through_smtplib_exception(e: CatalogEntry) -> None:
    """smtplib hands the reply over as (smtp_code, bytes): the route through exceptions agrees."""
    code, text = smtp_reply(e.name)
    exc = smtplib.SMTPResponseException(code, text.encode())
    err = classify_transport_exception(exc, transport="smtp", request_sent=False)
    assert err.catalog == e.name


@pytest.mark.parametrize("e", list(entries("graph")), ids=lambda e: e.name)
def test_graph_row(e: CatalogEntry) -> None:
    status, headers, body = graph_error(
        e.name, request_id=REQUEST_ID, client_request_id=CLIENT_REQUEST_ID, date=DATE,
        retry_after=7 if e.retry_after else None,
    )
    err = classify_graph_response(status, body, headers, operation="send")
    _assert_row(err, e)
    assert err.transport == "graph"
    assert err.status == status == e.status
    assert err.request_id == REQUEST_ID
    assert err.client_request_id == CLIENT_REQUEST_ID
    assert err.retry_after == (7.0 if e.retry_after else None)
    assert err.request_sent
    if e.code:
        assert json.loads(body or b"")["error"]["code"] == e.code == err.code


@pytest.mark.parametrize("e", [e for e in entries("graph") if e.maybe_delivered], ids=lambda e: e.name)
def test_graph_ambiguous_rows_only_on_sending_operations(e: CatalogEntry) -> None:
    status, headers, body = graph_error(e.name, request_id="r", client_request_id="c", date=DATE)
    assert classify_graph_response(status, body, headers, operation="send_draft").maybe_delivered
    # Creating a draft or uploading that timed out cannot have delivered anything.
    err = classify_graph_response(status, body, headers, operation="create_draft")
    assert not err.maybe_delivered
    assert err.catalog == e.name


@pytest.mark.parametrize("e", list(entries("entra")), ids=lambda e: e.name)
def test_entra_row(e: CatalogEntry) -> None:
    status, body = entra_error(
        e.name, trace_id="trace-1", correlation_id="corr-1", timestamp="2025-03-01 10:00:00Z"
    )
    assert body["error"] == e.oauth_error
    delegated = e.flow == "delegated"
    err = classify_entra_error(body, status=status, delegated=delegated)
    _assert_row(err, e)
    assert err.transport == "entra"
    assert err.request_id == "trace-1"
    assert err.client_request_id == "corr-1"
    assert "Trace ID" not in err.detail
    # MSAL's result dict has no status; the raw body as bytes classifies the same.
    assert classify_entra_error(body, delegated=delegated).catalog == e.name
    assert classify_entra_error(json.dumps(body).encode(), status=status, delegated=delegated).catalog == e.name
    if e.code.startswith("AADSTS"):
        assert err.code == e.code
        assert e.meaning in err.detail


@pytest.mark.parametrize("e", list(entries("keyvault")), ids=lambda e: e.name)
def test_keyvault_row(e: CatalogEntry) -> None:
    status, body = keyvault_error(e.name)
    error = body["error"]
    inner = (error.get("innererror") or {}).get("code")
    err = classify_keyvault_error(status, error["code"], error["message"], inner_code=inner)
    _assert_row(err, e)
    assert err.transport == "keyvault"
    # Callers that do not pass the inner code (shared/certificates.py) get the same row.
    assert classify_keyvault_error(status, error["code"], error["message"]).catalog == e.name


# Each no-reply row, with an exception that produces it and whether the request had been sent.
NET_CASES: dict[str, tuple[Callable[[], BaseException], bool]] = {
    "net.connect_failed": (lambda: httpx.ConnectError("[Errno 111] Connection refused"), False),
    "net.connect_timeout": (lambda: httpx.ConnectTimeout("timed out"), False),
    "net.timeout": (lambda: httpx.PoolTimeout("no connection available"), False),
    "net.timeout_after_send": (lambda: httpx.ReadTimeout("timed out"), True),
    "net.connection_lost": (lambda: smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False),
    "net.connection_lost_after_send": (
        lambda: smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True,
    ),
    "net.tls_verify_failed": (
        lambda: ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        False,
    ),
    "net.tls_error": (lambda: ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), False),
    "net.credential_unavailable": (lambda: CredentialUnavailableError("ManagedIdentityCredential unavailable"), False),
    "net.server_error": (lambda: _azure_http_error(503), True),
    "net.client_error": (lambda: _azure_http_error(409), True),
    "net.unexpected": (lambda: RuntimeError("boom"), False),
    "net.unexpected_after_send": (lambda: KeyError("id"), True),
}


def _azure_http_error(status: int) -> BaseException:
    from azure.core.exceptions import HttpResponseError

    class _Response:
        status_code = status
        reason = "x"
        headers: ClassVar[dict[str, str]] = {}
        content = b""

        def text(self) -> str:
            return ""

    return HttpResponseError(message=f"status {status}", response=_Response())


def test_every_no_reply_row_has_an_exception_case() -> None:
    assert set(NET_CASES) == {e.name for e in entries("net")}


@pytest.mark.parametrize("e", list(entries("net")), ids=lambda e: e.name)
def test_no_reply_row(e: CatalogEntry) -> None:
    make, sent = NET_CASES[e.name]
    err = classify_transport_exception(make(), transport="storage", request_sent=sent)
    _assert_row(err, e)
    assert err.transport == "storage"
    assert err.request_sent == (sent or e.maybe_delivered)


def test_every_row_is_covered_by_a_transport() -> None:
    covered = {e.name for t in ("smtp", "graph", "entra", "keyvault", "net") for e in entries(t)}
    assert covered == {e.name for e in entries()}


# --- exceptions from the real client libraries -------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "sent", "name", "maybe"),
    [
        (httpx.ConnectTimeout("t"), True, "net.connect_timeout", False),  # nothing left before connecting
        (httpx.ReadTimeout("t"), False, "net.timeout", False),
        (httpx.WriteTimeout("t"), True, "net.timeout_after_send", True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True,
         "net.connection_lost_after_send", True),
        (httpx.ReadError("reset"), False, "net.connection_lost", False),
        (TimeoutError("timed out"), True, "net.timeout_after_send", True),  # socket.timeout is an alias
        (TimeoutError(), False, "net.timeout", False),
        (ConnectionRefusedError(111, "refused"), False, "net.connect_failed", False),
        (ConnectionResetError(104, "reset"), True, "net.connection_lost_after_send", True),
        (socket.gaierror(-2, "Name or service not known"), False, "net.connect_failed", False),
        (ServiceRequestError("no request sent"), True, "net.connect_failed", False),
        (ServiceResponseError("response failed"), False, "net.connection_lost_after_send", True),
        (ClientAuthenticationError("managed identity refused"), False, "net.credential_unavailable", False),
        (http.client.RemoteDisconnected("Remote end closed connection"), True,
         "net.connection_lost_after_send", True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_library_exceptions(exc: BaseException, sent: bool, name: str, maybe: bool) -> None:
    err = classify_transport_exception(exc, transport="graph", request_sent=sent)
    assert err.catalog == name
    assert err.maybe_delivered is maybe
    assert err.transport == "graph"


def test_certificate_error_inside_httpx_connect_error_is_config() -> None:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    try:
        try:
            raise cause
        except ssl.SSLError as inner:
            raise httpx.ConnectError(str(inner)) from inner
    except httpx.ConnectError as exc:
        err = classify_transport_exception(exc, transport="graph", request_sent=False)
    assert err.catalog == "net.tls_verify_failed"
    assert err.category == "config"
    assert "OUTBOX_CA_BUNDLE" in err.hint


def test_requests_ssl_error_with_the_cause_only_in_its_text() -> None:
    import requests

    exc = requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='login.example', port=443): Max retries exceeded (Caused by "
        "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed')))"
    )
    assert classify_transport_exception(exc, transport="entra", request_sent=False).catalog == "net.tls_verify_failed"


def test_already_classified_error_passes_through() -> None:
    original = OutboxError("throttled", "pacing.busy", retryable=True)
    assert classify_transport_exception(original, transport="graph", request_sent=False) is original


def test_a_users_sign_in_reads_shared_numbers_as_its_own() -> None:
    """65001 for the app-only grant is the admin's consent (config to fix once); for a user's refresh
    token it is the user's consent (sign in again): same number, other row, other category."""
    status, body = entra_error("entra.user_consent_missing", trace_id="t", correlation_id="c", timestamp="x")
    assert classify_entra_error(body, status=status).catalog == "entra.consent_missing"
    user = classify_entra_error(body, status=status, delegated=True)
    assert (user.catalog, user.category) == ("entra.user_consent_missing", "signin_required")
    # An invalid_grant with a number the catalog does not know still means "sign in again" for a user.
    unknown = {"error": "invalid_grant", "error_description": "AADSTS9999999: something new", "error_codes": [9999999]}
    assert classify_entra_error(unknown, delegated=True).category == "signin_required"
    assert classify_entra_error(unknown).category == "auth"
