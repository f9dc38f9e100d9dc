"""Stored sign-ins over Azurite and the fake Entra: two instances refreshing one account at once, a sign-in
aged past Entra's inactivity limit, MFA required, a tampered record, and the token-source seam."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import msal
import pytest
from azure.storage.blob import BlobServiceClient

from shared.http import build_client
from shared.signins.key import SigninKey
from shared.signins.records import SigninRecord, cache_context
from shared.signins.sealing import seal
from shared.signins.store import SigninStore
from shared.signins.tokens import DelegatedTokens
from tests.e2e.conftest import unique
from tests.harness.delegated import PUBLIC_CLIENT_ID, SENDER, public_app, sign_in
from tests.integration.transport_support import settings_for

GRAPH_SCOPES = ["Mail.Send", "Mail.ReadBasic"]


@pytest.fixture
def world(fakes: Any, azurite: Any) -> Iterator[dict[str, Any]]:
    settings = settings_for(fakes, OUTBOX_DELEGATED_CLIENT_ID=PUBLIC_CLIENT_ID, OUTBOX_DELEGATED_MAILBOXES=SENDER,
                            OUTBOX_SIGNIN_RECHECK_S="60")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    store = SigninStore(service, unique("signins-"))
    key = SigninKey(settings)
    made: list[DelegatedTokens] = []
    http = build_client(settings)

    def instance() -> DelegatedTokens:
        tokens = DelegatedTokens(settings, store, SigninKey(settings), http)
        made.append(tokens)
        return tokens

    def stored_sign_in(scopes: list[str] = GRAPH_SCOPES) -> None:
        """A sign-in as `outbox login` leaves it: the MSAL cache of a real authorization-code sign-in."""
        cache = msal.SerializableTokenCache()
        app = public_app(fakes)
        app.token_cache = cache
        sign_in(fakes, SENDER, scopes, app=app)
        now = dt.datetime.now(dt.UTC)
        store.write(SigninRecord(SENDER, SENDER, now, seal(key.get(), cache.serialize().encode(),
                                                           context=cache_context(SENDER)),
                                 {"graph": scopes}, now), etag=None)

    yield {"fakes": fakes, "store": store, "key": key, "instance": instance, "sign_in": stored_sign_in}
    for tokens in made:
        tokens.close()
    key.close()
    http.close()


def test_two_instances_refreshing_one_account_at_once_both_succeed_and_the_record_stays_readable(
    world: dict[str, Any],
) -> None:
    world["sign_in"]()
    a, b = world["instance"](), world["instance"]()
    results: list[Any] = []
    start = threading.Barrier(2)

    def refresh(tokens: DelegatedTokens) -> None:
        start.wait()
        results.append(tokens.refresh(SENDER, SENDER))

    threads = [threading.Thread(target=refresh, args=(t,)) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    # A third instance (a new worker) opens what was left and gets a token without a new sign-in.
    fresh = world["instance"]()
    assert fresh.token(SENDER, SENDER, "graph").token
    assert world["store"].get(SENDER).record.dead is None


def test_a_sign_in_unused_past_the_inactivity_limit_is_dead_and_entra_is_not_asked_again(world: dict[str, Any]) -> None:
    world["sign_in"]()
    world["fakes"].control.age_refresh_tokens(SENDER, 91)
    tokens = world["instance"]()
    result = tokens.refresh(SENDER, SENDER)
    assert not result.ok and result.error is not None
    calls = tokens.entra_calls
    with pytest.raises(Exception) as again:
        tokens.token(SENDER, SENDER, "graph")
    assert tokens.entra_calls == calls  # the dead sign-in was remembered (and written: see below)
    for exc in (result.error, again.value):
        assert getattr(exc, "category", None) == "signin_required"
    record = world["store"].get(SENDER).record
    assert record.dead is not None and record.dead.code == "AADSTS700082"
    # Another instance reads the record and does not call Entra either.
    other = world["instance"]()
    with pytest.raises(Exception) as third:
        other.token(SENDER, SENDER, "graph")
    assert other.entra_calls == 0 and "AADSTS700082" in str(third.value)


def test_mfa_required_after_sign_in_is_signin_required_with_the_fix(world: dict[str, Any]) -> None:
    world["sign_in"]()
    world["fakes"].control.apply_scenario(patch={"users": {SENDER: {"mfa_required": True}}})
    result = world["instance"]().refresh(SENDER, SENDER)
    assert not result.ok and result.error is not None
    assert (result.error.category, result.error.code) == ("signin_required", "AADSTS50076")
    assert f"outbox login --mailbox {SENDER}" in (result.error.hint or "")


def test_a_sign_in_without_the_smtp_consent_is_a_consent_poison_naming_the_fix(world: dict[str, Any]) -> None:
    world["sign_in"](GRAPH_SCOPES)
    world["fakes"].control.apply_scenario(
        patch={"users": {SENDER: {"consented": ["Mail.Send", "Mail.ReadBasic", "User.Read"]}}})
    with pytest.raises(Exception) as caught:
        world["instance"]().token(SENDER, SENDER, "smtp")
    # Entra answers a refresh for a scope the user never consented to with 65001 (user consent).
    assert (getattr(caught.value, "category", None), getattr(caught.value, "code", None)) == (
        "signin_required", "AADSTS65001")
    assert "outbox login" in (getattr(caught.value, "hint", "") or "")


def test_a_record_sealed_for_another_mailbox_does_not_open(world: dict[str, Any]) -> None:
    world["sign_in"]()
    store: SigninStore = world["store"]
    stored = store.get(SENDER)
    other = "other@contoso.example"
    moved = SigninRecord(other, other, stored.record.signed_in_at, stored.record.sealed_cache, stored.record.scopes)
    store.write(moved, etag=None)
    settings = settings_for(world["fakes"], OUTBOX_DELEGATED_CLIENT_ID=PUBLIC_CLIENT_ID,
                            OUTBOX_DELEGATED_MAILBOXES=other)
    tokens = DelegatedTokens(settings, store, SigninKey(settings), build_client(settings))
    with pytest.raises(Exception) as caught:
        tokens.token(other, other, "graph")
    assert "does not open" in str(caught.value)
    tokens.close()
