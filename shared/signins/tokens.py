"""Access tokens as a signed-in user, per mailbox: the delegated side of the token-source seam.

Each delegated mailbox has its own MSAL token cache (the sealed blob), so each has its own
``msal.PublicClientApplication`` (the cache is the app's); both are built on first use and kept for
the life of the process. A token is asked of MSAL silently, for the account by UPN and the exact
scope strings Entra echoes (``shared.signins.scopes``); a refresh is done under the mailbox's lock,
so one process refreshes a mailbox once however many threads want it. When MSAL's cache changed (a
refresh returned a new refresh token) the record is written back, ETag-guarded.

A dead sign-in (invalid_grant, interaction_required: expired, revoked, MFA, consent) is written to the
record and remembered: until someone signs in again, messages for the mailbox fail at once with
``signin_required`` and Entra is not called (MSAL would replay the same 400 for 60 s anyway, and
hammering a dead refresh token risks AADSTS50196). The stored record is re-read at most every
``OUTBOX_SIGNIN_RECHECK_S`` to notice a new sign-in.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.errors import ConfigError, OutboxError
from shared.http import MsalHttpClient
from shared.signins import scopes as scope_lists
from shared.signins.records import DeadSignIn, SigninRecord, cache_context
from shared.signins.sealing import SealError, seal, unseal
from shared.signins.store import Conflict, SigninStore, Stored
from shared.tokens import EXPIRY_MARGIN_S, AccessToken, classify_msal_exception

if TYPE_CHECKING:
    import httpx
    import msal

    from shared.settings import Settings
    from shared.signins.key import SigninKey
    from shared.signins.scopes import Resource

log = logging.getLogger("outbox.signins")


def public_app(settings: Settings, http_client: httpx.Client, cache: msal.TokenCache) -> msal.PublicClientApplication:
    """The delegated (public client) app over one token cache: `outbox login` and the function use the same."""
    import msal

    if not settings.delegated_client_id or not settings.tenant_id:
        raise ConfigError("delegated mailboxes need the public client app registration",
                          code="outbox.delegated_not_configured", transport="entra",
                          hint="set OUTBOX_DELEGATED_CLIENT_ID (infra/scripts/register-delegated-app.sh) and "
                          "OUTBOX_TENANT_ID")
    try:
        return msal.PublicClientApplication(
            settings.delegated_client_id, authority=settings.authority, token_cache=cache,
            http_client=MsalHttpClient(http_client), instance_discovery=settings.uses_microsoft_authority)
    except Exception as exc:
        raise classify_msal_exception(exc) from exc


def signin_hint(mailbox: str, account: str) -> str:
    who = f"{account} (the user signed in for {mailbox})" if account != mailbox else account
    login = f"outbox login --mailbox {mailbox}" + (f" --account {account}" if account != mailbox else "")
    return (f"{who} signs in again: `{login}`; then `outbox poison requeue --category signin_required "
            f"--mailbox {mailbox}` sends what waited (nothing was sent)")


def signin_missing(mailbox: str, account: str, detail: str) -> OutboxError:
    return OutboxError("signin_required", "outbox.signin_missing", transport="entra", retryable=False,
                       detail=detail, hint=signin_hint(mailbox, account), request_sent=False)


@dataclass
class _Mailbox:
    mailbox: str
    account: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    stored: Stored | None = None
    app: msal.PublicClientApplication | None = None
    cache: msal.SerializableTokenCache | None = None
    slots: dict[str, AccessToken] = field(default_factory=dict)
    dead: OutboxError | None = None
    recheck_at: float = 0.0


@dataclass(frozen=True)
class Refreshed:
    """One keep-alive refresh of one mailbox: what the account's row and the event say."""

    mailbox: str
    account: str
    ok: bool
    resources: tuple[str, ...] = ()
    error: OutboxError | None = None


class DelegatedTokens:
    def __init__(
        self,
        settings: Settings,
        store: SigninStore,
        key: SigninKey,
        http_client: httpx.Client,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._store = store
        self._key = key
        self._http = http_client
        self._clock = clock
        self._monotonic = monotonic
        self._boxes: dict[str, _Mailbox] = {}
        self._lock = threading.Lock()
        self.entra_calls = 0  # silent acquisitions that may reach Entra (tests and doctor read it)

    # -- the seam the transports use ----------------------------------------------------------------

    def token(self, mailbox: str, account: str, resource: Resource) -> AccessToken:
        box = self._box(mailbox, account)
        cached = box.slots.get(resource)
        if cached is not None and cached.expires_on - EXPIRY_MARGIN_S > self._clock():
            return cached
        with box.lock:
            cached = box.slots.get(resource)
            if cached is not None and cached.expires_on - EXPIRY_MARGIN_S > self._clock():
                return cached
            fresh = self._acquire(box, resource, force_refresh=False)
            box.slots[resource] = fresh
            return fresh

    def invalidate(self, mailbox: str, resource: Resource, token: str) -> None:
        box = self._boxes.get(mailbox.lower())
        if box is None:
            return
        with box.lock:
            cached = box.slots.get(resource)
            if cached is not None and cached.token == token:
                del box.slots[resource]
                if box.cache is not None:
                    for item in box.cache.search(box.cache.CredentialType.ACCESS_TOKEN):
                        if item.get("secret") == token:
                            box.cache.remove_at(item)

    # -- keep-alive -----------------------------------------------------------------------------------

    def refresh(self, mailbox: str, account: str) -> Refreshed:
        """Use the refresh token now, for every resource the sign-in covers (``force_refresh``: a silent
        call answered from a cached access token would not touch the refresh token, and Entra's 90-day
        inactivity clock would keep running)."""
        box = self._box(mailbox, account)
        done: list[str] = []
        with box.lock:
            try:
                # Re-read: a new sign-in since is refreshed; a dead one is reported without calling Entra.
                box.stored, box.dead = None, None
                self._load(box)
                assert box.stored is not None
                resources = [r for r in scope_lists.RESOURCES if r in box.stored.record.scopes] or ["graph"]
                for resource in resources:
                    box.slots[resource] = self._acquire(box, resource, force_refresh=True)
                    done.append(resource)
            except OutboxError as err:
                return Refreshed(mailbox, account, False, tuple(done), err)
        return Refreshed(mailbox, account, True, tuple(done))

    def close(self) -> None:
        self._key.close()

    # -- internals -------------------------------------------------------------------------------------

    def _box(self, mailbox: str, account: str) -> _Mailbox:
        wanted = mailbox.lower()
        box = self._boxes.get(wanted)
        if box is None:
            with self._lock:
                box = self._boxes.setdefault(wanted, _Mailbox(wanted, account.lower()))
        return box

    def _acquire(self, box: _Mailbox, resource: Resource, *, force_refresh: bool) -> AccessToken:
        if box.dead is not None:
            if self._monotonic() < box.recheck_at:
                raise box.dead
            box.stored = None  # re-read: someone may have signed in again
        self._load(box)
        assert box.stored is not None and box.app is not None and box.cache is not None
        record = box.stored.record
        if record.dead is not None:
            raise self._remember_dead(box, self._dead_error(box, record.dead))
        scopes = scope_lists.scopes_for(resource, shared=record.shared, outlook_resource=self._settings.outlook_resource)
        accounts = box.app.get_accounts(username=box.account)
        if not accounts:
            raise signin_missing(box.mailbox, box.account,
                                 f"the stored sign-in of {box.mailbox} holds no account {box.account}")
        self.entra_calls += 1
        try:
            result = box.app.acquire_token_silent_with_error(scopes, accounts[0], force_refresh=force_refresh)
        except OutboxError:
            raise
        except Exception as exc:
            raise classify_msal_exception(exc) from exc
        if result is None:
            raise signin_missing(
                box.mailbox, box.account,
                f"the sign-in of {box.account} has no consent for {' '.join(scopes)} ({resource}); "
                "it was given for: " + (", ".join(f"{k}: {' '.join(v)}" for k, v in record.scopes.items()) or "nothing"))
        if "access_token" not in result:
            from shared import classify

            err = classify.classify_entra_error(result, delegated=True)
            if err.category == "signin_required":
                err = err.replace(hint=signin_hint(box.mailbox, box.account))
                self._persist(box, lambda r: r.as_dead(DeadSignIn(err.code, err.detail or "", err.hint or "",
                                                                    self._now())))
                raise self._remember_dead(box, err)
            raise err
        token = AccessToken(str(result["access_token"]), self._clock() + float(result.get("expires_in") or 0),
                            " ".join(scopes))
        if box.cache.has_state_changed or force_refresh:
            sealed = self._seal(box)
            self._persist(box, lambda r: r.with_refresh(sealed, self._now()))
        return token

    def _load(self, box: _Mailbox) -> None:
        if box.stored is not None and box.app is not None:
            return
        stored = self._store.get(box.mailbox)
        if stored is None:
            raise self._remember_dead(box, signin_missing(
                box.mailbox, box.account, f"no sign-in is stored for {box.mailbox} (OUTBOX_DELEGATED_MAILBOXES "
                f"names it; container {self._store.container!r})"))
        if stored.record.account != box.account:
            raise self._remember_dead(box, signin_missing(
                box.mailbox, box.account, f"the stored sign-in of {box.mailbox} is {stored.record.account}'s, but "
                f"OUTBOX_DELEGATED_MAILBOXES says {box.account} signs in for it"))
        self._adopt(box, stored)

    def _adopt(self, box: _Mailbox, stored: Stored) -> None:
        import msal

        try:
            plain = unseal(self._key.get(), stored.record.sealed_cache, context=cache_context(box.mailbox))
        except SealError as exc:
            raise self._remember_dead(box, signin_missing(box.mailbox, box.account,
                                                          f"the stored sign-in of {box.mailbox}: {exc}")) from exc
        cache = msal.SerializableTokenCache()
        cache.deserialize(plain.decode())
        box.cache = cache
        box.app = public_app(self._settings, self._http, cache)
        box.stored = stored
        box.slots.clear()
        box.dead = None

    def _seal(self, box: _Mailbox) -> str:
        assert box.cache is not None
        return seal(self._key.get(), box.cache.serialize().encode(), context=cache_context(box.mailbox))

    def _persist(self, box: _Mailbox, update: Callable[[SigninRecord], SigninRecord]) -> None:
        for _ in range(3):
            assert box.stored is not None
            current = box.stored
            new = update(current.record)
            try:
                box.stored = Stored(new, self._store.write(new, etag=current.etag))
                return
            except Conflict:
                fresh = self._store.get(box.mailbox)
                if fresh is None:
                    raise self._remember_dead(box, signin_missing(
                        box.mailbox, box.account, f"the sign-in of {box.mailbox} was removed (outbox logout)")) from None
                if fresh.record.signed_in_at != current.record.signed_in_at:
                    log.info("a new sign-in of %s replaced the one in use; using it", box.mailbox)
                    self._adopt(box, fresh)
                    return
                box.stored = fresh  # another instance refreshed the same sign-in: ours is as valid
        log.warning("the sign-in of %s kept changing under us; not written this time", box.mailbox)

    def _remember_dead(self, box: _Mailbox, err: OutboxError) -> OutboxError:
        box.dead = err
        box.slots.clear()
        box.recheck_at = self._monotonic() + self._settings.signin_recheck_s
        return err

    def _dead_error(self, box: _Mailbox, dead: DeadSignIn) -> OutboxError:
        return OutboxError("signin_required", dead.code or "outbox.signin_dead", transport="entra", retryable=False,
                           detail=f"the sign-in of {box.mailbox} needs renewing since {dead.at.isoformat()}: "
                           f"{dead.detail}", hint=signin_hint(box.mailbox, box.account), request_sent=False)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

