"""What the classifier answers for shapes the catalog has no exact row for, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import json
import smtplib

import pytest

from harness.replies import entra_error, graph_error, smtp_reply
from shared.catalog import entry
from shared.classify import (
    classify_entra_error,
    classify_graph_response,
    classify_keyvault_error,
    classify_smtp_reply,
    classify_transport_exception,
    parse_retry_after,
)

NOW = 1_740_000_000.0  # a fixed "now" for HTTP-date arithmetic


# --- SMTP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "stage", "name", "category", "retryable"),
    [
        # Same enhanced code, several meanings: the text decides.
        (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit "
         "https://aka.ms/smtp_auth_disabled for more information. [X.prod.outlook.com]", "auth",
         "smtp.auth_disabled_mailbox", "permission", False),
        (535, "5.7.139 Authentication unsuccessful, basic authentication is disabled. [X]", "auth",
         "smtp.auth_blocked", "permission", False),
        (554, "5.2.252 SendAsDenied; a@x not allowed to send as b@x; STOREDRV.Submission.Exception:"
         "SendAsDeniedException.MapiExceptionSendAsDenied", "data", "smtp.send_as_denied_submission",
         "permission", False),
        (550, "5.2.252 Sender throttled due to continuous send as denied errors.", "data",
         "smtp.sender_throttled", "quota", False),
        # Unknown enhanced code under a known basic code.
        (535, "5.7.8 Error: authentication failed", "auth", "smtp.auth_failed", "auth", True),
        (530, "5.7.0 Must issue a STARTTLS command first", "mail", "smtp.not_authenticated", "auth", False),
        (421, "4.4.2 Connection dropped due to idle timeout", "data", "smtp.service_closing", "transient", True),
        (552, "5.2.3 Message too big", "data", "smtp.message_too_large", "size", False),
        # Only the basic code class is known.
        (451, "4.4.4 Something we have never seen", "rcpt", "smtp.transient_reply", "transient", True),
        (454, "No enhanced code at all", "auth", "smtp.transient_reply", "transient", True),
        (550, "5.1.1 User unknown", "rcpt", "smtp.recipient_rejected", "recipient", False),
        (550, "5.1.1 User unknown", "mail", "smtp.permanent_reply", "unknown", False),
        (500, "Command line too long", "auth", "smtp.permanent_reply", "unknown", False),
        # A known enhanced code under an unexpected reply code still means the same.
        (550, "5.7.60 SMTP; Client does not have permissions to send as this sender", "mail",
         "smtp.send_as_denied", "permission", False),
        (550, "5.7.613 Access denied, banned sending IP [203.0.113.9]", "connect", "smtp.banned_ip", "quota", False),
    ],
)
def test_smtp_lookups(code: int, text: str, stage: str, name: str, category: str, retryable: bool) -> None:
    err = classify_smtp_reply(code, text, stage=stage)
    assert (err.catalog, err.category, err.retryable) == (name, category, retryable)
    assert err.detail == f"{code} {text} (at {stage})"  # the server's words, whole, with the step they answer
    assert not err.maybe_delivered


def test_smtp_unknown_reply_keeps_server_text_and_generic_hint() -> None:
    err = classify_smtp_reply(550, "5.9.99 Brand new refusal", stage="data")
    assert err.category == "unknown" and err.code == "5.9.99"
    assert "Brand new refusal" in err.detail
    assert err.hint == entry("smtp.permanent_reply").hint


def test_smtp_full_line_and_bytes_are_accepted() -> None:
    code, text = smtp_reply("smtp.auth_failed")
    assert classify_smtp_reply(code, f"{code} {text}".encode(), stage="auth").catalog == "smtp.auth_failed"


def test_smtp_multiline_reply_uses_first_enhanced_code() -> None:
    text = "5.7.57 Client not authenticated to send mail.\n5.7.57 Error: 535 5.7.139 Authentication unsuccessful"
    assert classify_smtp_reply(530, text, stage="mail").catalog == "smtp.not_authenticated"


def test_smtp_unknown_stage_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="stage"):
        classify_smtp_reply(535, "5.7.3 x", stage="login")


def test_smtp_reply_after_data_was_sent_but_not_delivered() -> None:
    err = classify_smtp_reply(*smtp_reply("smtp.submission_quota"), stage="data")
    assert err.request_sent and not err.maybe_delivered


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (smtplib.SMTPAuthenticationError(535, b"5.7.3 Authentication unsuccessful [X]"), "smtp.auth_failed"),
        (smtplib.SMTPSenderRefused(550, b"5.7.60 SMTP; Client does not have permissions to send as this sender",
                                   "b@x"), "smtp.send_as_denied"),
        (smtplib.SMTPRecipientsRefused({"a@x": (452, b"4.5.3 Too many recipients")}), "smtp.too_many_recipients"),
        (smtplib.SMTPDataError(554, b"5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException"),
         "smtp.mailbox_full"),
        (smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."), "smtp.auth_before_tls"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v,
)
def test_smtp_client_exceptions(exc: BaseException, name: str) -> None:
    err = classify_transport_exception(exc, transport="smtp", request_sent=True)
    assert err.catalog == name
    assert err.transport == "smtp"


def test_dropped_connection_before_and_after_data() -> None:
    exc = smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
    before = classify_transport_exception(exc, transport="smtp", request_sent=False)
    after = classify_transport_exception(exc, transport="smtp", request_sent=True)
    assert (before.maybe_delivered, after.maybe_delivered) == (False, True)
    assert before.retryable and after.retryable
    assert after.request_sent


# --- Graph ----------------------------------------------------------------------------------------------


def _graph(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "innerError": {
        "date": "2025-03-01T10:00:00", "request-id": "inner-rid", "client-request-id": "inner-cid"}}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "name", "category"),
    [
        (403, _graph("ErrorAccessDenied", "Access to OData is disabled."), "graph.access_policy", "permission"),
        (403, _graph("ErrorAccessDenied", "Something else entirely."), "graph.access_denied", "permission"),
        (401, _graph("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
         "graph.invalid_token", "auth"),
        (429, _graph("ApplicationThrottled", "Application is over its SomethingNew limit."),
         "graph.too_many_requests", "throttled"),
        (401, _graph("MailboxNotEnabledForRESTAPI", "REST API is not yet supported for this mailbox."),
         "graph.mailbox_not_enabled", "config"),
        (400, _graph("ErrorSomethingNew", "Never seen."), "graph.client_error", "unknown"),
        (409, b"", "graph.client_error", "unknown"),
        (500, _graph("ErrorSomethingNew", "Never seen."), "graph.general_exception", "transient"),
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "graph.unreadable_response", "transient"),
        (503, b"<html>Service Unavailable</html>", "graph.service_unavailable", "transient"),
        (504, b"", "graph.gateway_timeout", "transient"),
        (413, b"<html>Request Entity Too Large</html>", "graph.request_too_large", "size"),
        (404, b'{"unexpected": "json"}', "graph.resource_not_found", "config"),
        (400, b"\xff\xfe not utf-8", "graph.client_error", "unknown"),
    ],
)
def test_graph_lookups(status: int, body: bytes, name: str, category: str) -> None:
    err = classify_graph_response(status, body, {}, operation="send")
    assert (err.catalog, err.category) == (name, category)
    assert err.detail.startswith(str(status))


def test_graph_ids_come_from_inner_error_when_headers_lack_them() -> None:
    err = classify_graph_response(403, _graph("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
                                  {}, operation="send")
    assert (err.request_id, err.client_request_id) == ("inner-rid", "inner-cid")
    assert err.catalog == "graph.no_mail_send"


def test_graph_headers_are_case_insensitive_and_win_over_inner_error() -> None:
    headers = {"Request-Id": "hdr-rid", "Client-Request-Id": "hdr-cid", "retry-after": "12"}
    body = _graph("ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
    err = classify_graph_response(429, body, headers, operation="send")
    assert (err.request_id, err.client_request_id, err.retry_after) == ("hdr-rid", "hdr-cid", 12.0)


def test_graph_gateway_timeout_on_send_is_ambiguous() -> None:
    status, headers, body = graph_error("graph.gateway_timeout", request_id="r", client_request_id="c", date="d")
    err = classify_graph_response(status, body, headers, operation="send")
    assert err.maybe_delivered and err.retryable and err.request_sent


def test_graph_413_is_size_in_its_json_shape_and_any_other() -> None:
    status, headers, body = graph_error("graph.request_too_large", request_id="r", client_request_id="c", date="d")
    assert status == 413 and body is not None
    assert json.loads(body)["error"]["code"] == "BadRequest"  # as observed (microsoft-graph-docs-contrib#682)
    err = classify_graph_response(status, body, headers, operation="send")
    assert err.category == "size" and "4MB" in err.detail
    plain = classify_graph_response(413, b"Maximum request length exceeded.", {}, operation="send")
    assert plain.category == "size"


def test_request_body_read_is_an_invalid_message_never_retried() -> None:
    for name in ("graph.request_body_read", "graph.request_body_read_value", "graph.request_body_read_parameter"):
        status, headers, body = graph_error(name, request_id="r", client_request_id="c", date="d")
        err = classify_graph_response(status, body, headers, operation="send")
        assert (err.category, err.code, err.retryable) == ("invalid_message", "RequestBodyRead", False), name


def test_graph_success_status_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        classify_graph_response(202, b"", {}, operation="send")


def test_graph_retry_after_http_date_is_relative_to_server_date() -> None:
    server_now = email.utils.formatdate(NOW, usegmt=True)
    later = email.utils.formatdate(NOW + 30, usegmt=True)
    status, headers, body = graph_error("graph.service_unavailable", request_id="r", client_request_id="c", date="d",
                                        retry_after=later)
    headers["Date"] = server_now
    assert classify_graph_response(status, body, headers, operation="send").retry_after == 30.0


# --- Retry-After ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: go now
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 99 Foo 2015 07:28:00", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_garbage_retry_after_leaves_retry_after_unset() -> None:
    status, headers, body = graph_error("graph.too_many_requests", request_id="r", client_request_id="c", date="d",
                                        retry_after="whenever")
    err = classify_graph_response(status, body, headers, operation="send")
    assert err.retry_after is None and err.retryable


# --- Entra / Key Vault --------------------------------------------------------------------------------------


def test_entra_unknown_aadsts_falls_back_on_the_oauth_error() -> None:
    body = {"error": "invalid_client", "error_description": "AADSTS9999999: Something new.\r\nTrace ID: t",
            "error_codes": [9999999]}
    err = classify_entra_error(body, status=401)
    assert (err.catalog, err.category, err.code) == ("entra.invalid_client", "auth", "AADSTS9999999")


def test_entra_number_only_in_description() -> None:
    _, full = entra_error("entra.tenant_not_found", trace_id="t", correlation_id="c", timestamp="ts")
    body = {"error": full["error"], "error_description": full["error_description"]}
    err = classify_entra_error(body)
    assert err.catalog == "entra.tenant_not_found" and err.category == "config"
    assert "tenant not found" in err.detail


@pytest.mark.parametrize(
    ("body", "status", "name"),
    [
        ({"error": "temporarily_unavailable", "error_description": "busy"}, 503, "entra.temporarily_unavailable"),
        ({"error": "server_error", "error_description": "oops"}, 500, "entra.server_error"),
        ({"error": "brand_new_error"}, 400, "entra.invalid_request"),
        ({}, 502, "entra.server_error"),
        (b"<html>Bad gateway</html>", 502, "entra.server_error"),
    ],
)
def test_entra_fallbacks(body: dict[str, str] | bytes, status: int, name: str) -> None:
    assert classify_entra_error(body, status=status).catalog == name


def test_entra_assertion_expired_retries_once_with_fresh_credentials() -> None:
    status, body = entra_error("entra.assertion_expired", trace_id="t", correlation_id="c", timestamp="ts")
    err = classify_entra_error(body, status=status)
    assert err.retryable and err.max_retries == 1 and err.refresh_credentials


def test_keyvault_not_found_names_the_secret() -> None:
    err = classify_keyvault_error(404, "SecretNotFound", "A secret with (name/id) mail-cert was not found in this key "
                                  "vault. If you recently deleted this secret you may be able to recover it.")
    assert err.category == "config"
    assert "'mail-cert'" in err.hint and "mail-cert" in err.detail


def test_keyvault_forbidden_hint_names_the_role() -> None:
    err = classify_keyvault_error(403, "Forbidden", "Caller is not authorized to perform action on resource.",
                                  inner_code="ForbiddenByRbac")
    assert err.category == "permission"
    assert "Key Vault Certificate User" in err.hint


@pytest.mark.parametrize(
    ("status", "code", "name"),
    [(503, None, "keyvault.server_error"), (409, "Conflict", "keyvault.client_error"),
     (401, None, "keyvault.unauthorized"), (429, None, "keyvault.throttled")],
)
def test_keyvault_fallbacks(status: int, code: str | None, name: str) -> None:
    assert classify_keyvault_error(status, code, None).catalog == name


# --- HTTP status exceptions carry their response ----------------------------------------------------------


def _httpx_status_error(status: int, headers: dict[str, str], body: bytes) -> BaseException:
    import httpx

    request = httpx.Request("POST", "https://graph.example/v1.0/users/a@x/sendMail")
    response = httpx.Response(status, headers=headers, content=body, request=request)
    return httpx.HTTPStatusError("error", request=request, response=response)


def test_httpx_status_error_is_classified_from_its_graph_response() -> None:
    status, headers, body = graph_error("graph.access_policy", request_id="rid", client_request_id="cid", date="d")
    err = classify_transport_exception(_httpx_status_error(status, headers, body or b""), transport="graph",
                                       request_sent=True)
    assert (err.catalog, err.request_id) == ("graph.access_policy", "rid")


def test_httpx_status_error_from_the_token_endpoint() -> None:
    status, body = entra_error("entra.invalid_signature", trace_id="t", correlation_id="c", timestamp="ts")
    exc = _httpx_status_error(status, {"content-type": "application/json"}, json.dumps(body).encode())
    assert classify_transport_exception(exc, transport="entra", request_sent=True).catalog == "entra.invalid_signature"


def test_httpx_status_error_from_key_vault() -> None:
    from harness.replies import keyvault_error

    status, body = keyvault_error("keyvault.forbidden_access_policy")
    exc = _httpx_status_error(status, {}, json.dumps(body).encode())
    err = classify_transport_exception(exc, transport="keyvault", request_sent=True)
    assert err.catalog == "keyvault.forbidden_access_policy"


def test_msal_service_error_after_a_server_error() -> None:
    from msal.exceptions import MsalServiceError

    exc = MsalServiceError("HTTP Error: 503", error=None, error_description=None)
    err = classify_transport_exception(exc, transport="entra", request_sent=True)
    assert err.category == "transient" and err.retryable and err.transport == "entra"


@pytest.mark.parametrize("text, category, entry", [
    ("5.2.0 STOREDRV.Submission.Exception:OutboundSpamException; Failed to process message due to a permanent "
     "exception with message [BeginDiagnosticData]WASCL UserAction verdict is not None. Actual verdict is Suspend, "
     "ShowTierUpgrade.[EndDiagnosticData]", "quota", "OutboundSpamException"),
    ("5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process "
     "message due to a permanent exception with message Cannot submit message.", "permission", "SendAsDenied"),
    ("5.2.0 STOREDRV.Submission.Exception:MessageSizeExceededException.MapiExceptionMaxSubmissionExceeded; "
     "Message size exceeds maximum size limit", "size", "MaxSubmissionExceeded"),
])
def test_real_554_5_2_0_replies_have_their_rows(text: str, category: str, entry: str) -> None:
    """Replies that used to fall to smtp.permanent_reply (unknown): fidelity-gaps.md #15."""
    from shared.classify import classify_smtp_reply

    err = classify_smtp_reply(554, text, stage="data")
    assert (err.category, err.retryable) == (category, False) and entry in (err.detail or "")
