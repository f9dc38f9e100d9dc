"""``outbox login``: a user signs in once for a mailbox; what they consented to is checked and stored.

Browser first (authorization code + PKCE through MSAL's loopback redirect: Conditional Access often
blocks device code, and one browser sign-in can collect consent for Graph and Outlook at once, via
``extra_scopes_to_consent``); device code for a machine with no browser (it consents to one resource
only, so the SMTP scope needs an admin's consent or a browser sign-in). After the sign-in, one token
per transport is asked for silently from the fresh cache, and its ``scp`` checked.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import OutboxError
from shared.signins import scopes as scope_lists
from shared.signins.records import SigninRecord, cache_context
from shared.signins.sealing import seal
from shared.signins.store import Conflict
from shared.signins.tokens import public_app
from shared.tokens import classify_msal_exception, decode_claims

if TYPE_CHECKING:
    import httpx

    from shared.settings import Settings
    from shared.signins.key import SigninKey
    from shared.signins.scopes import Resource
    from shared.signins.store import SigninStore

Method = Literal["browser", "device-code"]


class SigninRefused(Exception):
    """The sign-in worked but is not what the mailbox needs: who signed in, or what was consented."""

    def __init__(self, message: str, *, missing: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(message)
        self.missing = dict(missing or {})


@dataclass
class SigninResult:
    record: SigninRecord
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # resource -> token claims (no token)
    missing: dict[str, list[str]] = field(default_factory=dict)  # resource -> scopes not granted


def sign_in(
    settings: Settings,
    store: SigninStore,
    key: SigninKey,
    http_client: httpx.Client,
    *,
    mailbox: str,
    account: str,
    method: Method,
    transports: Sequence[Resource],
    show_device_code: Callable[[Mapping[str, Any]], None] = lambda flow: None,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> SigninResult:
    import msal

    mailbox, account = mailbox.lower(), account.lower()
    shared = mailbox != account
    cache = msal.SerializableTokenCache()
    app = public_app(settings, http_client, cache)
    wanted = {r: scope_lists.scopes_for(r, shared=shared, outlook_resource=settings.outlook_resource)
              for r in transports}
    first, *rest = transports
    others = [s for r in rest for s in wanted[r]]
    try:
        if method == "browser":
            result = app.acquire_token_interactive(
                wanted[first], extra_scopes_to_consent=others or None, login_hint=account,
                prompt="select_account", timeout=timeout_s)
        else:
            flow = app.initiate_device_flow(scopes=wanted[first])
            if "user_code" not in flow:
                raise _entra_refused(flow)
            show_device_code(flow)
            if timeout_s is not None:
                flow["expires_at"] = min(float(flow.get("expires_at") or 0) or clock() + timeout_s, clock() + timeout_s)
            result = app.acquire_token_by_device_flow(flow)
    except OutboxError:
        raise
    except Exception as exc:
        from msal.oauth2cli.oauth2 import BrowserInteractionTimeoutError

        if isinstance(exc, BrowserInteractionTimeoutError):
            raise SigninRefused(f"the browser sign-in was not completed within {timeout_s:.0f} s (--timeout); "
                                "nothing was stored") from exc
        raise classify_msal_exception(exc) from exc
    if "access_token" not in result:
        raise _entra_refused(result)

    signed_in = str((result.get("id_token_claims") or {}).get("preferred_username") or "")
    if signed_in.lower() != account:
        raise SigninRefused(
            f"{signed_in or 'an unknown user'} signed in, but the sign-in is for {account}"
            + (f" (the delegate of {mailbox})" if shared else "")
            + ": sign in again as that user (`--account` names another one)")
    accounts = app.get_accounts(username=account)
    if not accounts:
        raise SigninRefused(f"Entra's answer named no account for {account} (no client_info): report it")
    claims: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[str]] = {}
    for resource in transports:
        token = result if resource == first else app.acquire_token_silent_with_error(wanted[resource], accounts[0])
        if not token or "access_token" not in token:
            missing[resource] = list(wanted[resource])
            continue
        claims[resource] = decode_claims(str(token["access_token"]))
        granted = set(str(claims[resource].get("scp", "")).split())
        lacking = [s for s in wanted[resource] if scope_lists.short(s) not in granted]
        if lacking:
            missing[resource] = lacking
    if missing:
        words = "; ".join(f"{r}: {' '.join(s)}" for r, s in missing.items())
        raise SigninRefused(
            f"{account} signed in, but these were not consented: {words}. "
            + ("A device-code sign-in consents to one resource only: an admin grants consent for the rest in "
               "the tenant, or sign in with the browser. " if method == "device-code" and len(transports) > 1 else "")
            + "Nothing was stored.", missing=missing)

    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    sealed = seal(key.get(), cache.serialize().encode(), context=cache_context(mailbox))
    record = SigninRecord(mailbox=mailbox, account=account, signed_in_at=now, sealed_cache=sealed,
                          scopes={r: list(wanted[r]) for r in transports}, last_refresh=now)
    _store(store, record)
    return SigninResult(record, claims)


def _store(store: SigninStore, record: SigninRecord) -> None:
    """A new sign-in replaces whatever is stored (ETag-guarded, so a refresh mid-way is not mixed in)."""
    for _ in range(3):
        current = store.get(record.mailbox)
        try:
            store.write(record, etag=current.etag if current else None)
            return
        except Conflict:
            continue
    raise OutboxError("transient", "storage.signin_busy", transport="storage", retryable=True,
                      detail=f"the sign-in of {record.mailbox} kept changing while it was written; try again")


def _entra_refused(result: Mapping[str, Any]) -> OutboxError:
    from shared import classify

    return classify.classify_entra_error(result, delegated=True)
