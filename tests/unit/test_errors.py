"""OutboxError: envelope shape, redaction of secrets, copies and pickling."""

from __future__ import annotations

import base64
import pickle

import pytest

from shared.classify import classify_graph_response, classify_smtp_reply
from shared.errors import CATEGORIES, ENVELOPE_KEYS, ConfigError, OutboxError, redact

# A syntactically real JWT (header.payload.signature); the values are made up.
JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Im5iQ3dXMTF3M1hrQi14VWFYd0tSU0xqTUhHUSJ9"
    ".eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSIsInJvbGVzIjpbIlNNVFAuU2VuZEFzQXBwIl19"
    ".c2lnbmF0dXJlLWJ5dGVzLXRoYXQtbG9vay1yZWFs_-x"
)
XOAUTH2 = base64.b64encode(f"user=app@contoso.example\x01auth=Bearer {JWT}\x01\x01".encode()).decode()


def test_envelope_keys_are_exactly_the_designs() -> None:
    err = OutboxError(
        "permission", "ErrorAccessDenied", status=403, transport="graph", retryable=False,
        detail="Access is denied.", hint="grant Mail.Send", request_id="rid", client_request_id="cid",
        retry_after=3.0, catalog="graph.no_mail_send",
    )
    assert tuple(err.to_dict()) == ENVELOPE_KEYS
    assert ENVELOPE_KEYS == ("category", "code", "status", "transport", "retryable", "detail", "hint", "requestId")
    assert err.to_dict() == {
        "category": "permission", "code": "ErrorAccessDenied", "status": 403, "transport": "graph",
        "retryable": False, "detail": "Access is denied.", "hint": "grant Mail.Send", "requestId": "rid",
    }


def test_categories_are_the_designs() -> None:
    assert {
        "invalid_message", "auth", "signin_required", "permission", "recipient", "size", "quota", "throttled", "transient",
        "config", "unknown",
    } == CATEGORIES


def test_unknown_category_or_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="category"):
        OutboxError("fatal", "x")
    with pytest.raises(ValueError, match="transport"):
        OutboxError("auth", "x", transport="imap")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        (f"token {JWT} rejected", JWT),
        (f"C: AUTH XOAUTH2 {XOAUTH2}", XOAUTH2),
        (f"bad data {XOAUTH2}", XOAUTH2),
        (f"user=a@b\x01auth=Bearer {JWT}\x01\x01", JWT),
        ("client_assertion=abc.def.ghi&client_id=x", "abc.def.ghi"),
        ("client_secret=s3cr3t~value&grant_type=client_credentials", "s3cr3t~value"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Eby8vdM02xNOcqFl==;EndpointSuffix=x", "Eby8vdM02xNOcqFl=="),
        ("https://a.blob.core.windows.net/c/b?sv=2024&sig=AbC%2Fdef%3D&se=2025", "AbC%2Fdef%3D"),
        ('{"access_token": "opaque-token-value-1234"}', "opaque-token-value-1234"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
        ("x-functions-key: abcdefSECRET123", "abcdefSECRET123"),
    ],
    ids=["bearer", "jwt", "auth-xoauth2", "bare-xoauth2", "decoded-xoauth2", "assertion", "client-secret",
         "account-key", "sas-sig", "json-token", "private-key", "function-key"],
)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "redacted" in cleaned


def test_redact_keeps_what_operators_need() -> None:
    text = "535 5.7.3 Authentication unsuccessful [DM6PR04MB1234.namprd04.prod.outlook.com] request-id 5b1b8c3e"
    assert redact(text) == text
    assert redact(None) == ""


def test_secrets_in_server_text_never_reach_detail_or_envelope() -> None:
    err = classify_smtp_reply(535, f"5.7.3 Authentication unsuccessful; got AUTH XOAUTH2 {XOAUTH2}", stage="auth")
    body = f'{{"error":{{"code":"InvalidAuthenticationToken","message":"bad token {JWT}"}}}}'.encode()
    graph = classify_graph_response(401, body, {}, operation="send")
    for e in (err, graph):
        assert JWT not in e.detail and XOAUTH2 not in e.detail
        assert JWT not in str(e.to_dict()) and XOAUTH2 not in str(e.to_dict())
        assert JWT not in str(e) and JWT not in repr(e)
    # Built by hand, too: the constructor redacts.
    assert JWT not in OutboxError("auth", "x", detail=f"Bearer {JWT}").detail


def test_replace_and_pickle_keep_every_field() -> None:
    err = OutboxError(
        "throttled", "ApplicationThrottled", status=429, transport="graph", retryable=True, request_sent=True,
        detail="over", hint="wait", request_id="r", client_request_id="c", retry_after=2.5,
        catalog="graph.mailbox_concurrency", max_retries=3, refresh_credentials=True,
    )
    clone = pickle.loads(pickle.dumps(err))
    assert clone.fields() == err.fields()
    later = err.replace(retryable=False, detail="attempts exhausted")
    assert later.retryable is False and later.detail == "attempts exhausted"
    assert later.catalog == err.catalog and err.retryable is True
    with pytest.raises(TypeError):
        err.replace(colour="red")


def test_config_error_is_an_outbox_error_with_category_config() -> None:
    err = ConfigError("queue 'outbox' does not exist", code="storage.queue_missing", transport="storage", status=403,
                      hint="create it")
    assert isinstance(err, OutboxError)
    assert (err.category, err.code, err.retryable, err.status) == ("config", "storage.queue_missing", False, 403)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ConfigError and clone.fields() == err.fields()
    assert "storage.queue_missing" in str(err)


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _segment(min_size: int):
    from hypothesis import strategies as st

    return st.text(alphabet=_B64URL, min_size=min_size, max_size=60)


def test_any_jwt_or_bearer_token_in_any_text_is_removed() -> None:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(
        before=st.text(max_size=40), after=st.text(max_size=40),
        header=_segment(8), payload=_segment(8), signature=_segment(16),
    )
    def check(before: str, after: str, header: str, payload: str, signature: str) -> None:
        assume(signature not in before + after)
        jwt = f"eyJ{header}.{payload}.{signature}"
        for text in (f"{before} {jwt} {after}", f"{before}Bearer {jwt}{after}",
                     f"{before} AUTH XOAUTH2 " + base64.b64encode(f"user=a@b\x01auth=Bearer {jwt}\x01\x01".encode()).decode()):
            cleaned = redact(text)
            assert signature not in cleaned
            assert OutboxError("auth", "x", detail=text).detail == cleaned

    check()
