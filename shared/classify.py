"""Turn a server reply, an HTTP error response or an exception into a classified :class:`OutboxError`.

Pure and table-driven: every decision is a lookup into indexes built once from ``shared.catalog``;
a new failure shape is a new catalog row, not a new branch here. The functions return the error
(they never raise it) so the caller decides what to do with it.

Lookup order, for every transport: exact code (with text fragments only where the catalog has several
rows for one code) -> the row that answers for the status -> the status class fallback.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from shared.catalog import CatalogEntry, entries, entry
from shared.errors import OutboxError
from shared.redaction import ERROR_DETAIL_MAX, clip, redact

SMTP_STAGES: Final = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "quit")

# Graph operations that submit a message: only there can a lost answer mean a sent message.
SENDING_OPERATIONS: Final = frozenset({"send", "sendmail", "send_mail", "send_draft"})

_ENHANCED: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_AADSTS: Final = re.compile(r"AADSTS(\d+)")


# --- indexes built from the catalog --------------------------------------------------------------


def _group(pairs: Iterator[tuple[Any, CatalogEntry]]) -> Mapping[Any, tuple[CatalogEntry, ...]]:
    out: dict[Any, list[CatalogEntry]] = {}
    for key, e in pairs:
        out.setdefault(key, []).append(e)
    return {k: tuple(v) for k, v in out.items()}


def _smtp_codes(e: CatalogEntry) -> Iterator[str]:
    yield e.code
    yield from e.also_codes


_SMTP_BY_REPLY: Final = _group(
    ((e.status, code), e) for e in entries("smtp") for code in _smtp_codes(e)
)
_SMTP_BY_ENHANCED: Final = _group((code, e) for e in entries("smtp") for code in _smtp_codes(e))
_SMTP_BY_STATUS: Final = {e.status: e for e in entries("smtp") if e.status_default}
_SMTP_BY_STAGE: Final = {(e.stage, e.status // 100): e for e in entries("smtp") if e.stage_default and e.status}
_SMTP_BY_CLASS: Final = {4: entry("smtp.transient_reply"), 5: entry("smtp.permanent_reply")}

_GRAPH_BY_CODE: Final = _group((e.code.casefold(), e) for e in entries("graph") if e.code)
_GRAPH_BY_STATUS: Final = {e.status: e for e in entries("graph") if e.status_default}
_GRAPH_BY_CLASS: Final = {4: entry("graph.client_error"), 5: entry("graph.server_error")}
_GRAPH_UNREADABLE: Final = entry("graph.unreadable_response")

_ENTRA_BY_CODE: Final = {e.code: e for e in entries("entra") if e.code.startswith("AADSTS") and e.flow is None}
# A user's sign-in: its own rows first (65001 is the user's consent there, not the admin's).
_ENTRA_DELEGATED_BY_CODE: Final = {
    **_ENTRA_BY_CODE, **{e.code: e for e in entries("entra") if e.code.startswith("AADSTS") and e.flow == "delegated"}
}
# The row named after an OAuth error ("entra.invalid_client") answers for it when the AADSTS number
# is unknown; other OAuth errors fall back on the first row that uses them.
_ENTRA_BY_OAUTH: Final = {
    **{e.oauth_error: e for e in reversed(tuple(entries("entra")))},
    **{e.oauth_error: e for e in entries("entra") if e.name == f"entra.{e.oauth_error}"},
}
_ENTRA_SERVER: Final = entry("entra.server_error")
_ENTRA_SIGNIN_REQUIRED: Final = entry("entra.signin_required")
_ENTRA_CLIENT: Final = entry("entra.invalid_request")

_KV_BY_CODE: Final = _group((e.code.casefold(), e) for e in entries("keyvault"))
_KV_BY_STATUS: Final = {e.status: e for e in entries("keyvault") if e.status_default}
_KV_BY_CLASS: Final = {4: entry("keyvault.client_error"), 5: entry("keyvault.server_error")}

_HTTP_BY_CLASS: Final = {4: entry("net.client_error"), 5: entry("net.server_error")}


def _pick(candidates: tuple[CatalogEntry, ...], text: str, status: int | None = None) -> CatalogEntry | None:
    """The row whose fragment occurs in ``text``; else the row without fragments (same status first)."""
    folded = text.casefold()
    for e in candidates:
        if any(fragment.casefold() in folded for fragment in e.match):
            return e
    plain = [e for e in candidates if not e.match]
    for e in plain:
        if e.status == status:
            return e
    return plain[0] if plain else None


def _error(
    e: CatalogEntry,
    *,
    code: str,
    status: int | None,
    transport: str | None,
    detail: str,
    request_sent: bool,
    maybe_delivered: bool | None = None,
    hint_values: Mapping[str, str] | None = None,
    **extra: Any,
) -> OutboxError:
    return OutboxError(
        e.category,
        code,
        status=status,
        transport=transport if transport is not None else e.transport,
        retryable=e.retryable,
        request_sent=request_sent,
        maybe_delivered=e.maybe_delivered if maybe_delivered is None else maybe_delivered,
        detail=clip(redact(detail).strip(), ERROR_DETAIL_MAX),
        hint=e.hint_for(hint_values or {}),
        catalog=e.name,
        max_retries=e.max_retries,
        refresh_credentials=e.refresh_credentials,
        **extra,
    )


# --- SMTP -------------------------------------------------------------------------------------------


def smtp_entry(code: int, text: str, stage: str | None = None) -> CatalogEntry:
    """The catalog row for an SMTP reply (the lookup behind :func:`classify_smtp_reply`)."""
    found = _ENHANCED.search(text)
    enhanced = ".".join(found.groups()) if found else None
    candidates = _SMTP_BY_REPLY.get((code, enhanced)) or _SMTP_BY_ENHANCED.get(enhanced) or ()
    chosen = _pick(candidates, text, code) if candidates else None
    return (
        chosen
        or _SMTP_BY_STATUS.get(code)
        or _SMTP_BY_STAGE.get((stage, code // 100))
        or _SMTP_BY_CLASS.get(code // 100)
        or entry("smtp.permanent_reply")
    )


def classify_smtp_reply(code: int, text: str | bytes, *, stage: str) -> OutboxError:
    """Classify an SMTP reply. ``text`` is the reply after the code (as smtplib gives it);
    ``stage`` is the command it answered (one of :data:`SMTP_STAGES`)."""
    if stage not in SMTP_STAGES:
        raise ValueError(f"unknown SMTP stage {stage!r}; expected one of {SMTP_STAGES}")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    # A caller may pass the whole line, "535 5.7.3 ..."; the code is known already.
    text = re.sub(rf"^{code}[ -]", "", text)
    e = smtp_entry(code, text, stage)
    found = _ENHANCED.search(text)
    return _error(
        e,
        code=".".join(found.groups()) if found else str(code),
        status=code,
        transport="smtp",
        detail=f"{code} {text}" + (f" (at {stage})" if stage else ""),
        # A reply is an answer: the server did or did not take the message, nothing is ambiguous.
        request_sent=stage == "data",
        maybe_delivered=False,
        hint_values=e.parse(text),
    )


# --- Graph ------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
    None when absent or unreadable; a date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


def _lower_headers(headers: Mapping[str, str] | Any) -> dict[str, str]:
    if headers is None:
        return {}
    # httpx, azure-core and aiohttp headers are mappings; a list of pairs is accepted too.
    items: Iterable[tuple[object, object]] = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def _graph_body(body: bytes | str | None) -> tuple[dict[str, Any] | None, str]:
    """(Graph "error" object or None, body text for detail)."""
    if body is None:
        return None, ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        return None, text
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed["error"], text
    return None, text


def graph_entry(status: int, code: str, message: str, *, readable: bool = True) -> CatalogEntry:
    """The catalog row for a Graph error (the lookup behind :func:`classify_graph_response`)."""
    candidates = _GRAPH_BY_CODE.get(code.casefold(), ()) if code else ()
    chosen = _pick(candidates, message, status) if candidates else None
    if chosen:
        return chosen
    if status in _GRAPH_BY_STATUS:
        return _GRAPH_BY_STATUS[status]
    if not readable and status >= 500:
        return _GRAPH_UNREADABLE
    return _GRAPH_BY_CLASS.get(status // 100, _GRAPH_BY_CLASS[5])


def classify_graph_response(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | Any,
    *,
    operation: str,
    now: float | None = None,
) -> OutboxError:
    """Classify a Graph error response. ``operation`` names the call ("send" = sendMail, "send_draft",
    "create_draft", "upload", "lookup", ...); only sending operations can be ``maybe_delivered``."""
    if status < 400:
        raise ValueError(f"HTTP {status} is not an error response")
    lower = _lower_headers(headers)
    error, text = _graph_body(body)
    code = str(error.get("code") or "") if error else ""
    message = str(error.get("message") or "") if error else ""
    inner = {}
    if error:
        raw_inner = error.get("innerError") or error.get("innererror") or {}
        inner = raw_inner if isinstance(raw_inner, dict) else {}
    e = graph_entry(status, code, message, readable=error is not None)
    if error is not None:
        detail = f"{status} {code}: {message}" if code else f"{status}: {message}"
    else:
        detail = f"{status}: {text}" if text.strip() else f"{status} (empty body)"
    date_header = lower.get("date")
    reference = now
    if reference is None and date_header:
        # Relative to the server's own clock when it sent one: immune to local clock skew.
        try:
            reference = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = None
    sending = operation.casefold() in SENDING_OPERATIONS
    return _error(
        e,
        code=code or e.code or f"http_{status}",
        status=status,
        transport="graph",
        detail=detail,
        request_sent=True,
        maybe_delivered=e.maybe_delivered and sending,
        hint_values=e.parse(message),
        request_id=lower.get("request-id") or inner.get("request-id"),
        client_request_id=lower.get("client-request-id") or inner.get("client-request-id"),
        retry_after=parse_retry_after(lower.get("retry-after"), now=reference),
    )


# --- Entra ID -------------------------------------------------------------------------------------


def entra_entry(error: str, numbers: list[int], status: int | None, *, delegated: bool = False) -> CatalogEntry:
    """The catalog row for a token endpoint error (the lookup behind :func:`classify_entra_error`).

    ``delegated``: the error answers a user's grant (refresh token, device code, authorization code)."""
    by_code = _ENTRA_DELEGATED_BY_CODE if delegated else _ENTRA_BY_CODE
    for number in numbers:
        if f"AADSTS{number}" in by_code:
            return by_code[f"AADSTS{number}"]
    if delegated and error in ("invalid_grant", "interaction_required"):
        return _ENTRA_SIGNIN_REQUIRED
    if error in _ENTRA_BY_OAUTH:
        return _ENTRA_BY_OAUTH[error]
    if status is not None and (status >= 500 or status == 429):
        return _ENTRA_SERVER
    return _ENTRA_CLIENT if error else _ENTRA_SERVER


def classify_entra_error(
    result_or_body: Mapping[str, Any] | bytes | str, *, status: int | None = None, delegated: bool = False
) -> OutboxError:
    """Classify an MSAL result dict (``error``, ``error_description``, ``error_codes``) or the token
    endpoint's raw body. The AADSTS number is decoded into words in ``detail``."""
    body: Mapping[str, Any]
    if isinstance(result_or_body, bytes | bytearray | str):
        raw = result_or_body.decode("utf-8", "replace") if isinstance(result_or_body, bytes | bytearray) else result_or_body
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else {"error": "", "error_description": raw}
    else:
        body = result_or_body
    error = str(body.get("error") or "")
    description = str(body.get("error_description") or "")
    numbers: list[int] = []
    for value in body.get("error_codes") or ():
        try:
            numbers.append(int(value))
        except (TypeError, ValueError):
            continue
    numbers += [int(n) for n in _AADSTS.findall(description)]
    e = entra_entry(error, numbers, status, delegated=delegated)
    code = f"AADSTS{numbers[0]}" if numbers else (error or e.code)
    # Keep only the message: trace/correlation ids follow on their own lines.
    first = description.split("\r\n")[0].split("\n")[0].strip()
    words = f" ({e.meaning})" if e.meaning and e.code == code else ""
    detail = f"{code}{words}: {first.removeprefix(code + ':').strip()}" if first else f"{code}{words}"
    if error and error not in detail:
        detail = f"{error}: {detail}"
    return _error(
        e,
        code=code,
        status=status,
        transport="entra",
        detail=detail,
        request_sent=True,
        maybe_delivered=False,
        hint_values=e.parse(first),
        request_id=str(body.get("trace_id") or "") or None,
        client_request_id=str(body.get("correlation_id") or "") or None,
    )


# --- Key Vault ------------------------------------------------------------------------------------


def keyvault_entry(status: int, code: str | None, message: str, inner_code: str | None = None) -> CatalogEntry:
    """The catalog row for a Key Vault error (the lookup behind :func:`classify_keyvault_error`)."""
    candidates = _KV_BY_CODE.get((code or "").casefold(), ())
    if candidates:
        if inner_code:
            for e in candidates:
                if e.inner_code and e.inner_code.casefold() == inner_code.casefold():
                    return e
        chosen = _pick(candidates, message, status)
        if chosen:
            return chosen
    return _KV_BY_STATUS.get(status) or _KV_BY_CLASS.get(status // 100, _KV_BY_CLASS[5])


def classify_keyvault_error(
    status: int, code: str | None, message: str | None, *, inner_code: str | None = None
) -> OutboxError:
    """Classify a Key Vault data-plane error (``error.code``, ``error.message``, ``innererror.code``)."""
    message = message or ""
    e = keyvault_entry(status, code, message, inner_code)
    shown = code or e.code
    detail = f"{status} {shown}" + (f" ({inner_code})" if inner_code else "") + (f": {message}" if message else "")
    return _error(
        e,
        code=shown,
        status=status,
        transport="keyvault",
        detail=detail,
        request_sent=True,
        maybe_delivered=False,
        hint_values=e.parse(message),
    )


# --- exceptions -----------------------------------------------------------------------------------

# Exception type -> (row when nothing was sent, row when the request had been sent). Types are named
# "<top-level package>.<class>" and matched against the MRO of every exception in the cause chain,
# so no SDK has to be imported here. First matching rule wins: specific causes (a certificate error
# inside httpx.ConnectError) come before generic wrappers.
_EXCEPTION_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    ("ssl.SSLCertVerificationError", "net.tls_verify_failed", "net.tls_verify_failed"),
    ("azure.CredentialUnavailableError", "net.credential_unavailable", "net.credential_unavailable"),
    # azure-identity raises this (without a response) when the managed identity endpoint refuses.
    ("azure.ClientAuthenticationError", "net.credential_unavailable", "net.credential_unavailable"),
    ("smtplib.SMTPNotSupportedError", "smtp.auth_before_tls", "smtp.auth_before_tls"),
    ("httpx.ConnectTimeout", "net.connect_timeout", "net.connect_timeout"),
    ("requests.ConnectTimeout", "net.connect_timeout", "net.connect_timeout"),
    ("httpx.PoolTimeout", "net.timeout", "net.timeout"),
    ("azure.ServiceRequestTimeoutError", "net.connect_timeout", "net.connect_timeout"),
    ("azure.ServiceResponseTimeoutError", "net.timeout_after_send", "net.timeout_after_send"),
    ("httpx.TimeoutException", "net.timeout", "net.timeout_after_send"),
    ("requests.Timeout", "net.timeout", "net.timeout_after_send"),
    ("builtins.TimeoutError", "net.timeout", "net.timeout_after_send"),
    ("httpx.ConnectError", "net.connect_failed", "net.connect_failed"),
    ("smtplib.SMTPConnectError", "net.connect_failed", "net.connect_failed"),
    ("requests.ConnectionError", "net.connect_failed", "net.connect_failed"),
    ("builtins.ConnectionRefusedError", "net.connect_failed", "net.connect_failed"),
    ("socket.gaierror", "net.connect_failed", "net.connect_failed"),
    # azure-core: "no request was sent" vs "the request was sent, the response failed".
    ("azure.ServiceRequestError", "net.connect_failed", "net.connect_failed"),
    ("azure.ServiceResponseError", "net.connection_lost_after_send", "net.connection_lost_after_send"),
    ("ssl.SSLError", "net.tls_error", "net.tls_error"),
    ("smtplib.SMTPServerDisconnected", "net.connection_lost", "net.connection_lost_after_send"),
    ("httpx.NetworkError", "net.connection_lost", "net.connection_lost_after_send"),
    ("httpx.RemoteProtocolError", "net.connection_lost", "net.connection_lost_after_send"),
    ("requests.ChunkedEncodingError", "net.connection_lost", "net.connection_lost_after_send"),
    ("builtins.ConnectionError", "net.connection_lost", "net.connection_lost_after_send"),
    ("builtins.EOFError", "net.connection_lost", "net.connection_lost_after_send"),
    ("builtins.OSError", "net.connection_lost", "net.connection_lost_after_send"),
)

# Where an SMTP exception that carries a reply says which command failed.
_SMTP_EXCEPTION_STAGE: Final = {
    "SMTPAuthenticationError": "auth",
    "SMTPSenderRefused": "mail",
    "SMTPRecipientRefused": "rcpt",
    "SMTPRecipientsRefused": "rcpt",
    "SMTPDataError": "data",
    "SMTPHeloError": "ehlo",
    "SMTPConnectError": "connect",
    "SMTPConnectResponseError": "connect",
}

# Text of wrapped errors (requests/urllib3 keep the ssl error in args, not in __cause__).
_TEXT_RULES: Final[tuple[tuple[str, str], ...]] = (("certificate verify failed", "net.tls_verify_failed"),)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__, *(a for a in current.args if isinstance(a, BaseException))):
            if nxt is not None:
                todo.append(nxt)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


def _type_names(exc: BaseException) -> set[str]:
    return {f"{cls.__module__.split('.')[0]}.{cls.__name__}" for cls in type(exc).__mro__}


def _smtp_reply_of(exc: BaseException) -> tuple[int, str, str] | None:
    """(code, text, stage) from smtplib's response exceptions (the product's only SMTP client)."""
    name = type(exc).__name__
    stage = _SMTP_EXCEPTION_STAGE.get(name)
    recipients = getattr(exc, "recipients", None)
    if isinstance(recipients, dict) and recipients:  # smtplib: {rcpt: (code, msg)}
        code, text = next(iter(recipients.values()))
        return int(code), text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text), "rcpt"
    code = getattr(exc, "smtp_code", None)
    if isinstance(code, int) and code >= 200 and type(exc).__module__.split(".")[0] == "smtplib":
        text = getattr(exc, "smtp_error", "")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or "")
        return code, text, stage or ""
    return None


def _http_response_of(exc: BaseException) -> tuple[int, Any, bytes, Any] | None:
    """(status, headers, body, azure error) from httpx.HTTPStatusError / azure HttpResponseError."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if not isinstance(status, int) or response is None or status < 400:
        return None
    headers = getattr(response, "headers", {}) or {}
    body = b""
    try:
        content = response.content if hasattr(response, "content") else response.body()
        body = content if isinstance(content, bytes) else str(content or "").encode()
    except Exception:  # a streamed or closed body: classify on status alone
        body = b""
    return status, headers, body, getattr(exc, "error", None)


def classify_transport_exception(exc: BaseException, *, transport: str | None, request_sent: bool) -> OutboxError:
    """Classify an exception raised while talking to a service. ``request_sent`` says whether the
    request (SMTP: the message after DATA) had left this process when it happened."""
    if isinstance(exc, OutboxError):
        return exc
    chain = list(_chain(exc))

    for link in chain:
        reply = _smtp_reply_of(link)
        if reply is not None:
            code, text, stage = reply
            return classify_smtp_reply(code, text, stage=stage or ("data" if request_sent else "mail"))

    http = _http_response_of(exc)
    if http is not None:
        status, headers, body, azure_error = http
        if transport == "graph":
            return classify_graph_response(status, body, headers, operation="unknown")
        if transport == "entra":
            return classify_entra_error(body, status=status)
        if transport == "keyvault":
            vault_code = getattr(azure_error, "code", None)
            message = getattr(azure_error, "message", None)
            inner = getattr(azure_error, "innererror", None) or {}
            inner_code = inner.get("code") if isinstance(inner, dict) else None
            if vault_code is None and body:
                try:
                    parsed = json.loads(body).get("error", {})
                    vault_code, message = parsed.get("code"), parsed.get("message")
                    inner_code = (parsed.get("innererror") or {}).get("code")
                except (ValueError, AttributeError):
                    pass
            return classify_keyvault_error(status, vault_code, message or str(exc), inner_code=inner_code)
        e = _HTTP_BY_CLASS[5] if status >= 500 or status == 429 else _HTTP_BY_CLASS[4]
        return _error(e, code=f"http_{status}", status=status, transport=transport,
                      detail=f"{status}: {exc}", request_sent=True)

    if type(exc).__name__ == "MsalServiceError":
        description = getattr(exc, "error_description", None) or str(exc)
        error = getattr(exc, "error", None) or getattr(exc, "_error", None)
        return classify_entra_error({"error": error or "server_error",
                                     "error_description": description}, status=500)

    name = _exception_rule(chain, request_sent)
    e = entry(name)
    sent = request_sent or e.maybe_delivered
    return _error(
        e,
        code=e.code,
        status=None,
        transport=transport,
        detail=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        request_sent=sent,
    )


def _exception_rule(chain: list[BaseException], request_sent: bool) -> str:
    # Text first: wrappers (requests, urllib3) hide the precise error in their message only.
    texts = " ".join(str(link) for link in chain).casefold()
    for fragment, name in _TEXT_RULES:
        if fragment in texts:
            return name
    names = [_type_names(link) for link in chain]
    for type_name, not_sent, sent in _EXCEPTION_RULES:
        if any(type_name in found for found in names):
            return sent if request_sent else not_sent
    return "net.unexpected_after_send" if request_sent else "net.unexpected"
