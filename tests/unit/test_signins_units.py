"""The pure parts of delegated sending: sealing, the stored record, the mailbox list setting, who a
mailbox sends as, and the NCRONTAB schedule the keep-alive timer uses."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from harness import ncrontab
from shared.credentials import AppCredential, Credentials, DelegatedCredential
from shared.errors import ConfigError
from shared.settings import SettingsError, load_settings
from shared.signins.records import SigninRecord, cache_context
from shared.signins.sealing import SealError, new_key, parse_key, seal, unseal

BASE = {"OUTBOX_QUEUE": "outbox", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


# -- sealing ------------------------------------------------------------------------------------------------


def test_a_sealed_cache_opens_only_with_its_key_and_its_mailbox() -> None:
    key = new_key()
    sealed = seal(key, b'{"RefreshToken": {}}', context=cache_context("a@contoso.example"))
    assert unseal(key, sealed, context=cache_context("A@contoso.example")) == b'{"RefreshToken": {}}'
    assert b"RefreshToken" not in base64.b64decode(sealed)
    with pytest.raises(SealError):
        unseal(key, sealed, context=cache_context("b@contoso.example"))  # copied onto another mailbox's record
    with pytest.raises(SealError):
        unseal(new_key(), sealed, context=cache_context("a@contoso.example"))  # another key
    tampered = base64.b64decode(sealed)
    tampered = tampered[:-1] + bytes([tampered[-1] ^ 1])
    with pytest.raises(SealError):
        unseal(key, base64.b64encode(tampered).decode(), context=cache_context("a@contoso.example"))


def test_two_seals_of_the_same_cache_differ() -> None:
    key = new_key()
    assert seal(key, b"x", context="c") != seal(key, b"x", context="c")  # a fresh nonce each time


@pytest.mark.parametrize("text, words", [("not base64!", "not base64"), (base64.b64encode(b"short").decode(), "5 bytes")])
def test_a_wrong_key_secret_is_named(text: str, words: str) -> None:
    with pytest.raises(SealError, match=words):
        parse_key(text)


# -- the record -----------------------------------------------------------------------------------------------


def test_the_record_round_trips_and_its_summary_carries_no_cache() -> None:
    record = SigninRecord("noreply@contoso.example", "alice@contoso.example", NOW, "c2VhbGVk",
                          {"graph": ["Mail.Send"]}, NOW - dt.timedelta(days=3))
    again = SigninRecord.from_bytes(record.to_bytes())
    assert again == record
    summary = record.summary(NOW)
    assert summary["shared"] is True and summary["refreshTokenAgeDays"] == 3.0
    assert summary["inactiveAfter"] == "2027-02-28T12:00:00Z"  # 90 days after the last refresh
    assert "c2VhbGVk" not in str(summary)


def test_a_blob_that_is_not_a_sign_in_record_is_refused() -> None:
    with pytest.raises(ValueError):
        SigninRecord.from_bytes(b'{"schema": "something/1"}')


# -- settings ------------------------------------------------------------------------------------------------


def test_delegated_mailboxes_pair_a_mailbox_with_who_signs_in_for_it() -> None:
    settings = load_settings({**BASE, "OUTBOX_DELEGATED_MAILBOXES": " Reports@Contoso.com , noreply@contoso.com=Alice@contoso.com"})
    assert settings.delegated_mailboxes == (("reports@contoso.com", "reports@contoso.com"),
                                            ("noreply@contoso.com", "alice@contoso.com"))
    assert settings.delegated_account("NOREPLY@contoso.com") == "alice@contoso.com"
    assert settings.delegated_account("other@contoso.com") is None


@pytest.mark.parametrize("value, words", [
    ("reports", "OUTBOX_DELEGATED_MAILBOXES"),
    ("a@contoso.com=b@contoso.com, a@contoso.com=c@contoso.com", "listed twice"),
])
def test_a_bad_delegated_mailbox_list_is_named(value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "OUTBOX_DELEGATED_MAILBOXES": value})
    assert "OUTBOX_DELEGATED_MAILBOXES" in caught.value.problems
    assert words in str(caught.value.problems)


def test_the_sign_ins_may_not_live_where_producers_may_point_attachments() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "OUTBOX_SIGNIN_CONTAINER": "outbox-attachments"})
    assert "OUTBOX_SIGNIN_CONTAINER" in caught.value.problems


# -- who a mailbox sends as -----------------------------------------------------------------------------------


def test_a_listed_mailbox_sends_as_its_user_and_the_rest_app_only() -> None:
    settings = load_settings({**BASE, "OUTBOX_DELEGATED_MAILBOXES": "me@contoso.com, shared@contoso.com=alice@contoso.com"})
    credentials = Credentials(settings, app_tokens=None, delegated=object())  # type: ignore[arg-type]
    own, shared, app = (credentials.for_mailbox(m) for m in ("me@contoso.com", "shared@contoso.com", "x@contoso.com"))
    assert isinstance(own, DelegatedCredential) and own.graph_path == "me" and own.smtp_user == "me@contoso.com"
    assert isinstance(shared, DelegatedCredential)
    assert shared.graph_path == "users/shared@contoso.com" and shared.smtp_user == "alice@contoso.com"
    assert isinstance(app, AppCredential) and app.graph_path == "users/x@contoso.com" and app.user is None


def test_a_delegated_mailbox_never_falls_back_to_the_apps_roles() -> None:
    settings = load_settings({**BASE, "OUTBOX_DELEGATED_MAILBOXES": "me@contoso.com"})
    with pytest.raises(ConfigError):
        Credentials(settings, app_tokens=None, delegated=None).for_mailbox("me@contoso.com")  # type: ignore[arg-type]


# -- NCRONTAB -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, after, expected", [
    ("0 17 3 * * *", "2026-12-03T12:00:00", "2026-12-04T03:17:00"),
    ("*/10 * * * * *", "2026-12-03T12:00:05", "2026-12-03T12:00:10"),
    ("0 0 9 * * 1-5", "2026-12-04T10:00:00", "2026-12-07T09:00:00"),  # Friday after 9 -> Monday (Sunday is 0)
    ("0 30 9 1 1 *", "2026-12-03T00:00:00", "2027-01-01T09:30:00"),
])
def test_ncrontab_next_run(schedule: str, after: str, expected: str) -> None:
    moment = dt.datetime.fromisoformat(after).replace(tzinfo=dt.UTC)
    assert ncrontab.next_after(ncrontab.parse(schedule), moment) == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize("schedule", ["0 17 3 * *", "0 60 * * * *", "0 * * * * 7", "0 */0 * * * *"])
def test_ncrontab_refuses_what_the_host_would(schedule: str) -> None:
    with pytest.raises(ValueError):
        ncrontab.parse(schedule)
