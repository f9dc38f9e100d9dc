"""Secrets never leave through any output path: log event, poison envelope, status row, CLI --json,
HTTP error body, doctor report. Hypothesis builds each credential shape around random secret material
and the test looks for that material in what every path writes."""

from __future__ import annotations

import base64
import io
import json
import logging
import string
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from function_app import http_api
from shared.cli.output import Exit, Output
from shared.doctor import Check
from shared.errors import OutboxError
from shared.events import log_outcome, outcome_event
from shared.redaction import redact
from shared.storage.queues import poison_envelope
from shared.storage.status import StatusRow

_B64URL = string.ascii_letters + string.digits + "-_"
_B64 = string.ascii_letters + string.digits + "+/"

material = st.text(_B64URL, min_size=24, max_size=60)
"""Secret material: long enough that finding it in an output cannot be a coincidence."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _jwt(secret: str) -> tuple[str, list[str]]:
    payload = _b64url(json.dumps({"sub": secret, "aud": "https://graph.microsoft.com"}).encode())
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    token = f"{header}.{payload}.{secret}"
    return token, [payload, secret]


def _xoauth2(secret: str) -> tuple[str, list[str]]:
    jwt, parts = _jwt(secret)
    blob = base64.b64encode(f"user=sender@contoso.example\x01auth=Bearer {jwt}\x01\x01".encode()).decode()
    return blob, [blob[8:], *parts]


def _xoauth2_command(secret: str) -> tuple[str, list[str]]:
    blob, parts = _xoauth2(secret)
    return f"AUTH XOAUTH2 {blob}", parts


def _xoauth2_raw(secret: str) -> tuple[str, list[str]]:
    return f"user=sender@contoso.example\x01auth=Bearer {secret}\x01\x01", [secret]


def _pem(kind: str) -> Callable[[str], tuple[str, list[str]]]:
    def build(secret: str) -> tuple[str, list[str]]:
        body = base64.b64encode((secret * 4).encode()).decode()
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----", [
            line for line in lines if len(line) >= 16]
    return build


def _keyvault_bundle(secret: str) -> tuple[str, list[str]]:
    bundle = {"value": f"{secret} with spaces \"and quotes\"", "id": "https://kv.vault.azure.net/secrets/s/1",
              "attributes": {"enabled": True}}
    return json.dumps(bundle), [secret]


def _connection_string(secret: str) -> tuple[str, list[str]]:
    key = base64.b64encode(secret.encode()).decode()
    return (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net",
            [key])


def _sas_url(secret: str) -> tuple[str, list[str]]:
    return f"https://acct.blob.core.windows.net/c/b.pdf?sv=2024-08-04&se=2026-01-01&sp=r&sig={secret}%3D", [secret]


def _refresh_token_form(secret: str) -> tuple[str, list[str]]:
    return f"grant_type=refresh_token&refresh_token=1.AXoA{secret}&client_id=x", [secret]


def _refresh_token_json(secret: str) -> tuple[str, list[str]]:
    return json.dumps({"token_type": "Bearer", "refresh_token": f"0.AXoA{secret}"}), [secret]


def _refresh_token_bare(secret: str) -> tuple[str, list[str]]:
    return f"cached 1.AXoA{secret}*{secret[:8]}", [secret]


def _authorization_code(secret: str) -> tuple[str, list[str]]:
    return f"https://localhost/redirect?code=0.AXoA{secret}&state=abc&session_state=x", [secret]


def _authorization_code_form(secret: str) -> tuple[str, list[str]]:
    return f"grant_type=authorization_code&code={secret}&redirect_uri=https%3A%2F%2Flocalhost", [secret]


def _msal_cache(secret: str) -> tuple[str, list[str]]:
    """A serialized MSAL token cache (what a delegated mailbox's sign-in holds once unsealed)."""
    cache = {"RefreshToken": {"uid.utid-login.example-refreshtoken-client--": {
        "credential_type": "RefreshToken", "secret": f"{secret}-rt", "home_account_id": "uid.utid"}},
        "AccessToken": {"k": {"credential_type": "AccessToken", "secret": f"{secret}.at", "target": "Mail.Send"}}}
    return json.dumps(cache, indent=4), [f"{secret}-rt", f"{secret}.at"]


def _device_code_form(secret: str) -> tuple[str, list[str]]:
    return (f"grant_type=urn:ietf:params:oauth:grant-type:device_code&device_code={secret}&code={secret}"
            "&client_id=x", [secret])


def _signin_record(secret: str) -> tuple[str, list[str]]:
    return json.dumps({"schema": "outbox.signin/1", "mailbox": "a@b", "cache": f"{secret}=="}), [secret]


SHAPES: dict[str, Callable[[str], tuple[str, list[str]]]] = {
    "msal-cache": _msal_cache,
    "device-code-form": _device_code_form,
    "signin-record": _signin_record,
    "jwt": _jwt,
    "bearer": lambda s: (f"Authorization: Bearer {_jwt(s)[0]}", _jwt(s)[1]),
    "xoauth2": _xoauth2,
    "xoauth2-command": _xoauth2_command,
    "xoauth2-raw": _xoauth2_raw,
    "pem-private-key": _pem("PRIVATE KEY"),
    "pem-rsa-key": _pem("RSA PRIVATE KEY"),
    "pem-certificate": _pem("CERTIFICATE"),
    "keyvault-bundle": _keyvault_bundle,
    "connection-string": _connection_string,
    "sas-url": _sas_url,
    "refresh-token-form": _refresh_token_form,
    "refresh-token-json": _refresh_token_json,
    "refresh-token-bare": _refresh_token_bare,
    "authorization-code": _authorization_code,
    "authorization-code-form": _authorization_code_form,
}

# Words around a secret: server prose, never glued to it (a credential is its own token in real text).
prose = st.text(st.sampled_from(string.ascii_letters + string.digits + " .,:()[]-"), max_size=40)


def _error(text: str) -> OutboxError:
    return OutboxError("auth", "535", status=535, transport="smtp", detail=text, hint="re-consent")


def _log_event(text: str) -> str:
    stream = io.StringIO()
    log = logging.getLogger("outbox.test-redaction")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    try:
        log_outcome(outcome_event("poisoned", message_id="m", mailbox="a@b", transport="smtp", attempt=1,
                                  detail=text), log=log)
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def _envelope(text: str) -> str:
    return json.dumps(poison_envelope({"id": "m"}, _error(text), attempts=1, first_seen=None))


def _status_row(text: str) -> str:
    row = StatusRow(id="m", state="retrying").with_error(_error(text))
    return json.dumps({**row.to_entity(), **row.public()}, default=str)


def _cli_json(text: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    Output(json_mode=True, stdout=out, stderr=err).fail(f"cannot read the queue: {text}", Exit.FAILED,
                                                         {"cause": text})
    return out.getvalue() + err.getvalue()


def _http_error_body(text: str) -> str:
    bodies = [http_api._json(502, http_api._error_body(_error(text))), http_api._config_failure(ValueError(text))]
    return "".join(b.get_body().decode() for b in bodies)


def _doctor(text: str) -> str:
    check = Check("smtp.auth", "smtp: AUTH", "fail", f"535 {text}", detail=text, evidence={"reply": text})
    return json.dumps(check.to_dict())


PATHS: dict[str, Callable[[str], str]] = {
    "log-event": _log_event,
    "poison-envelope": _envelope,
    "status-row": _status_row,
    "cli-json": _cli_json,
    "http-error-body": _http_error_body,
    "doctor": _doctor,
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_no_output_path_lets_a_secret_through(shape: str, path: str) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(secret=material, before=prose, after=prose)
    def check(secret: str, before: str, after: str) -> None:
        text, forbidden = SHAPES[shape](secret)
        assume(not any(part in before + after for part in forbidden))
        written = PATHS[path](f"{before} {text} {after}")
        for part in forbidden:
            assert part not in written, f"{shape} leaked through {path}: {written!r}"

    check()


def test_redaction_keeps_what_operators_need() -> None:
    for text in ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
                 '{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}',
                 "AADSTS700024: Client assertion is not within its valid time range. Trace ID: 5b1b8c3e",
                 "https://acct.blob.core.windows.net/attachments/a.pdf (404 BlobNotFound)"):
        assert redact(text) == text
