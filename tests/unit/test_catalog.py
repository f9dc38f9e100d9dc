"""The catalog as data: rows are complete, names stable, helper shapes exact, docs in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.replies import entra_error, graph_error, keyvault_error, smtp_reply
from shared.catalog import (
    DOC_BEGIN,
    DOC_END,
    CatalogEntry,
    catalog_markdown,
    entries,
    entry,
)
from shared.errors import CATEGORIES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"

# Names other engineers build against (team brief). Renaming one breaks the fakes and scenarios.
AGREED_NAMES = {
    "smtp.auth_failed", "smtp.auth_disabled_mailbox", "smtp.auth_disabled_tenant", "smtp.auth_before_tls",
    "smtp.bad_user", "smtp.not_authenticated", "smtp.send_as_denied", "smtp.send_as_denied_submission",
    "smtp.thread_limit", "smtp.server_busy", "smtp.too_many_recipients", "smtp.message_too_large",
    "smtp.mailbox_full", "smtp.submission_quota", "smtp.sender_throttled", "smtp.temporary_error",
    "smtp.logon_failure",
    "graph.invalid_recipients", "graph.header_count", "graph.invalid_header_name", "graph.request_too_large",
    "graph.token_expired", "graph.invalid_audience", "graph.access_policy", "graph.no_mail_send",
    "graph.send_as_denied", "graph.invalid_user", "graph.mailbox_not_enabled", "graph.mailbox_concurrency",
    "graph.incoming_bytes", "graph.too_many_requests", "graph.service_unavailable", "graph.gateway_timeout",
    "graph.general_exception", "graph.resource_not_found",
    "entra.invalid_signature", "entra.app_not_found", "entra.tenant_not_found", "entra.scope_not_default",
    "entra.assertion_expired", "entra.consent_missing", "entra.temporarily_unavailable",
    "keyvault.forbidden", "keyvault.secret_not_found", "keyvault.unauthorized",
}

ALL = list(entries())


def test_agreed_names_exist() -> None:
    assert {e.name for e in ALL} >= AGREED_NAMES


def test_entry_lookup_and_unknown_name() -> None:
    assert entry("smtp.auth_failed").code == "5.7.3"
    with pytest.raises(KeyError, match=r"smtp\.nope"):
        entry("smtp.nope")


def test_entries_filter_by_transport() -> None:
    assert {e.transport for e in entries("graph")} == {"graph"}
    assert {e.transport for e in entries("net")} == {None}
    assert len(ALL) == sum(len(list(entries(t))) for t in ("smtp", "graph", "entra", "keyvault", "net"))


@pytest.mark.parametrize("e", ALL, ids=lambda e: e.name)
def test_row_is_complete(e: CatalogEntry) -> None:
    assert re.fullmatch(r"[a-z]+\.[a-z0-9_]+", e.name)
    assert e.name.split(".")[0] == (e.transport or "net")
    assert e.category in CATEGORIES
    assert e.hint.strip() and e.source.strip() and e.text.strip()
    # Every placeholder has a default, so a fake can produce the row without arguments.
    assert e.placeholders() <= {k for k, _ in e.defaults}
    assert e.render() == e.render(**dict(e.defaults))
    # Facts are either sourced or marked as outbox's own choice, never silent.
    assert any(word in e.source for word in ("md", "docs", "[obs]", "assumption", "outbox", "RFC", "Key Vault"))
    if e.maybe_delivered:
        assert e.retryable, "an ambiguous failure is resolved by a (deduplicated) later attempt"
    if e.category in ("quota", "permission", "config", "invalid_message", "size", "recipient"):
        assert not e.retryable or e.max_retries is not None


def test_quota_rows_are_permanent_and_say_to_wait_or_fix() -> None:
    for e in ALL:
        if e.category == "quota":
            assert not e.retryable, e.name


def test_smtp_rows_have_enhanced_codes_matching_the_reply_class() -> None:
    for e in entries("smtp"):
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", e.code), e.name
        assert e.status is not None and str(e.status)[0] == e.code[0], e.name


def test_rows_sharing_a_code_are_told_apart_by_text() -> None:
    """Where several rows share (status, code), at most one may lack fragments, and each row's text
    must contain its own fragment and no other row's."""
    groups: dict[tuple[object, str], list[CatalogEntry]] = {}
    for e in ALL:
        if e.transport in ("smtp", "graph", "keyvault") and e.code:
            key = (e.status if e.transport == "smtp" else None, e.code.casefold())
            groups.setdefault(key, []).append(e)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        assert sum(1 for r in rows if not r.match) <= 1, [r.name for r in rows]
        for r in rows:
            text = r.render().casefold()
            for other in rows:
                if other is not r:
                    assert not any(f.casefold() in text for f in other.match), (r.name, other.name)


def test_smtp_reply_shape() -> None:
    code, text = smtp_reply("smtp.auth_disabled_tenant", host="AM0PR02CA0022.eurprd02.prod.outlook.com")
    assert code == 535
    assert text == (
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit "
        "https://aka.ms/smtp_auth_disabled for more information. [AM0PR02CA0022.eurprd02.prod.outlook.com]"
    )
    assert smtp_reply("smtp.thread_limit") == (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
    with pytest.raises(ValueError, match="graph"):
        smtp_reply("graph.access_policy")


def test_graph_error_shape() -> None:
    status, headers, body = graph_error(
        "graph.mailbox_concurrency", request_id="rid", client_request_id="cid", date="2025-03-01T10:00:00",
        retry_after=5,
    )
    assert status == 429
    assert headers["request-id"] == "rid" and headers["client-request-id"] == "cid"
    assert headers["Retry-After"] == "5"
    assert json.loads(body or b"") == {"error": {
        "code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit.",
        "innerError": {"date": "2025-03-01T10:00:00", "request-id": "rid", "client-request-id": "cid"}}}
    _, headers, _ = graph_error("graph.access_policy", request_id="r", client_request_id="c", date="d")
    assert "Retry-After" not in headers
    _, _, body = graph_error("graph.invalid_header_name", request_id="r", client_request_id="c", date="d",
                             header="Reply-To")
    assert "'Reply-To' should start with 'x-' or 'X-'" in json.loads(body or b"")["error"]["message"]


@pytest.mark.parametrize(
    ("name", "status", "oauth"),
    [
        ("entra.invalid_signature", 401, "invalid_client"),
        ("entra.app_not_found", 400, "unauthorized_client"),
        ("entra.tenant_not_found", 400, "invalid_request"),
        ("entra.scope_not_default", 400, "invalid_scope"),
        ("entra.consent_missing", 400, "invalid_grant"),
        ("entra.temporarily_unavailable", 503, "temporarily_unavailable"),
    ],
)
def test_entra_error_shape(name: str, status: int, oauth: str) -> None:
    got_status, body = entra_error(name, trace_id="t-1", correlation_id="c-1", timestamp="2025-03-01 10:00:00Z")
    number = int(entry(name).code.removeprefix("AADSTS"))
    assert got_status == status
    assert set(body) == {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id",
                         "error_uri"}
    assert body["error"] == oauth
    assert body["error_codes"] == [number]
    description = str(body["error_description"])
    assert description.startswith(f"AADSTS{number}: ")
    assert description.endswith("\r\nTrace ID: t-1\r\nCorrelation ID: c-1\r\nTimestamp: 2025-03-01 10:00:00Z")
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={number}"


def test_entra_error_fills_placeholders() -> None:
    _, body = entra_error("entra.app_not_found", trace_id="t", correlation_id="c", timestamp="ts",
                          client_id="11111111-2222-3333-4444-555555555555", tenant="fabrikam.example")
    assert "Application with identifier '11111111-2222-3333-4444-555555555555' was not found in the directory " \
           "'fabrikam.example'" in str(body["error_description"])


def test_keyvault_error_shape() -> None:
    assert keyvault_error("keyvault.secret_not_found", name="mail-cert") == (404, {"error": {
        "code": "SecretNotFound",
        "message": "A secret with (name/id) mail-cert was not found in this key vault. If you recently deleted "
                   "this secret you may be able to recover it using the correct recovery command. For help "
                   "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"}})
    status, body = keyvault_error("keyvault.forbidden")
    assert status == 403
    assert body["error"]["code"] == "Forbidden"
    assert body["error"]["innererror"] == {"code": "ForbiddenByRbac"}
    assert keyvault_error("keyvault.unauthorized")[0] == 401


def test_docs_generated_section_matches_the_catalog() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index(DOC_BEGIN): text.index(DOC_END) + len(DOC_END)]
    assert section == catalog_markdown(), "run: python -m shared.catalog docs/errors.md"


@pytest.mark.parametrize("e", ALL, ids=lambda e: e.name)
def test_docs_name_every_row_with_category_and_hint(e: CatalogEntry) -> None:
    rows = [line for line in DOCS.read_text(encoding="utf-8").splitlines() if line.startswith(f"| `{e.name}` |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split(" | ")]
    assert e.category in cells
    assert " ".join(e.hint.split()).replace("|", "\\|") in rows[0]
