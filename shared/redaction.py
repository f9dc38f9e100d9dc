"""What may leave the process: every text a person or a log can read goes through :func:`redact`.

Server replies, exception texts and settings errors are copied into log events, poison envelopes,
status rows, HTTP error bodies, CLI output and doctor reports, which many people can read. Anything
shaped like a credential is cut out here, in one place, so no output path is weaker than another:
bearer tokens and JWTs, XOAUTH2 strings (raw and base64), PEM keys and certificates, Key Vault secret
bundles (``"value": "..."``), storage connection strings (``AccountKey=``), SAS signatures (``sig=``),
MSAL refresh tokens and authorization codes, and long opaque base64 runs.

Texts are also clipped, one named limit per field (the ``*_MAX`` constants), after redaction so a
clip never leaves half a secret behind. Pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

# One clip limit per field (characters).
ERROR_DETAIL_MAX: Final = 1000
"""``OutboxError.detail``: the classified server text."""
EVENT_DETAIL_MAX: Final = 500
"""``detail`` of a log event."""
ROW_DETAIL_MAX: Final = 1000
"""``lastDetail`` of a status row."""
ENVELOPE_DETAIL_MAX: Final = 2000
"""``error.detail`` of a poison envelope."""
ENVELOPE_DETAIL_SQUEEZED_MAX: Final = 500
"""``error.detail`` of an envelope that would not fit a queue message otherwise."""
EXCEPTION_TEXT_MAX: Final = 300
"""An unexpected exception's text, in a log line or an error detail."""
DOCTOR_MEANING_MAX: Final = 160
"""A doctor check's one-line summary of what a server said."""

_REDACTED: Final = "[redacted]"

# Order matters: the specific forms run before the generic ones (a PEM body is base64 that the
# long-run rule would only partly catch; a JWT inside "Bearer ..." keeps its "Bearer" word).
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # PEM blocks of any kind (keys, certificates, PKCS#7), whole, or cut off before their END line.
    (re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S), "[redacted-pem]"),
    # A Key Vault secret bundle ({"value": "...", "id": ...}) and tokens in JSON bodies.
    (
        re.compile(
            r"(?i)(\"(?:value|access_token|refresh_token|id_token|client_secret|client_assertion|"
            r"password|assertion|secret|device_code|cache)\"\s*:\s*)\"(?:[^\"\\]|\\.)*\""
        ),
        r'\1"' + _REDACTED + '"',
    ),
    # The XOAUTH2 initial response: "AUTH XOAUTH2 <base64>", a bare base64 of "user=..." and the raw form.
    (re.compile(r"(?i)(AUTH\s+XOAUTH2\s+)\S+"), r"\1" + _REDACTED),
    (re.compile(r"dXNlcj[A-Za-z0-9+/]{8,}={0,2}"), "[redacted-xoauth2]"),
    (re.compile(r"user=[^\s\x01]*\x01auth=[^\x01]*(?:\x01\x01|$)"), "[redacted-xoauth2]"),
    (re.compile(r"(?i)(\bauth=Bearer\s+)[^\s\x01]+"), r"\1" + _REDACTED),
    (re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1" + _REDACTED),
    # JWT / JWS / JWE compact forms: base64url JSON header "eyJ" then dot-separated segments.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}"), "[redacted-jwt]"),
    # MSAL / Entra refresh tokens and authorization codes ("0.A..." / "1.A...", opaque, long).
    (re.compile(r"\b[01]\.A[A-Za-z0-9_*.\-]{30,}"), "[redacted-token]"),
    (re.compile(r"(?i)\b(code=)[^\s\"&;,']{16,}"), r"\1" + _REDACTED),
    # name=value / name: value secrets in connection strings, SAS URLs, form bodies and headers.
    (
        re.compile(
            r"(?i)\b(client_assertion|client_secret|assertion|access_token|refresh_token|id_token|device_code|"
            r"password|passwd|pwd|secret|sig|signature|api[_-]?key|x-functions-key|"
            r"SharedAccessSignature|AccountKey|SharedAccessKey)"
            r"(\"?\s*[=:]\s*\"?)"
            r"[^\s\"&;,]+"
        ),
        r"\1\2" + _REDACTED,
    ),
    # Long base64 runs (PFX bodies, opaque tokens) never carry anything an operator needs.
    (re.compile(r"[A-Za-z0-9+/_-]{120,}={0,2}"), "[redacted-blob]"),
)


def redact(text: str | None) -> str:
    """``text`` with bearer tokens, JWTs, XOAUTH2 strings, keys, certificates and signatures removed."""
    if not text:
        return ""
    out = text
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact_clip(text: str | None, limit: int) -> str:
    """Redact, then clip: a clip never leaves half a secret where the whole one would have been caught."""
    return clip(redact(text), limit)


def redact_tree(value: Any) -> Any:
    """A JSON-like document with every string in it redacted (keys kept: they are our own words)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value
