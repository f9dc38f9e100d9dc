"""App-only access tokens from Entra ID, with the certificate from Key Vault.

One ``msal.ConfidentialClientApplication`` per process and certificate: building one costs ~40 ms
(loading and checking the RSA key) plus OIDC discovery, so it is rebuilt only when the certificate's
thumbprint changes. The token cache survives that rebuild, so a rotation does not throw away tokens
that are still valid.

In front of MSAL's cache sits a per-scope slot holding the last token: a hit is a dict lookup and a
clock read, which is all a message pays. A token is never handed out within
``EXPIRY_MARGIN_S`` of its ``exp`` (client credentials get no refresh token: a fresh one is
requested instead). MSAL itself refreshes early when Entra sends ``refresh_in``.

Entra errors become classified ``OutboxError``s. AADSTS700027 (the assertion's signature or
thumbprint is not one the app registration knows) and AADSTS700024 (the assertion is outside its
validity window) first invalidate the certificate and retry once: a certificate rotated in Key Vault
is picked up without a restart.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from shared.errors import OutboxError
from shared.http import HttpStatusError, MsalHttpClient

if TYPE_CHECKING:
    import msal

    from shared.certificates import CertificateMaterial, CertificateProvider
    from shared.settings import Settings

log = logging.getLogger(__name__)

# A token this close to its expiry is not handed out (a send takes seconds; clocks drift). Matches
# MSAL's own cut-off, so our slot and MSAL's cache agree on what is still usable.
EXPIRY_MARGIN_S = 300.0
# AADSTS codes after which the certificate is re-read and the request tried once more.
CERTIFICATE_RETRY_CODES = frozenset({700027, 700024})


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_on: float  # epoch seconds
    scope: str

    def __repr__(self) -> str:  # never print the token itself
        return f"AccessToken(scope={self.scope!r}, expires_on={self.expires_on:.0f})"


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, without checking its signature (for doctor and the CLI, never for trust)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError) as exc:
        raise ValueError("not a JWT access token") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a JWT access token")
    return claims


class TokenProvider:
    """Thread-safe app-only tokens per scope. ``token(scope)`` is the only call on the hot path."""

    def __init__(
        self,
        settings: Settings,
        certificates: CertificateProvider,
        *,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        expiry_margin_s: float = EXPIRY_MARGIN_S,
    ) -> None:
        self._settings = settings
        self._certificates = certificates
        self._http = http_client
        self._owns_http = http_client is None
        self._clock = clock
        self._margin = expiry_margin_s
        self._slots: dict[str, AccessToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _locks and the MSAL app
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_thumbprint: str | None = None
        self._adapter: MsalHttpClient | None = None
        self._cache: msal.TokenCache | None = None
        self.acquisitions = 0  # calls into MSAL (our own slot missed); MSAL may still answer from its cache

    # -- public ---------------------------------------------------------------------------------

    def token(self, scope: str) -> AccessToken:
        cached = self._slots.get(scope)
        if cached is not None and cached.expires_on - self._margin > self._clock():
            return cached
        with self._scope_lock(scope):
            cached = self._slots.get(scope)
            if cached is not None and cached.expires_on - self._margin > self._clock():
                return cached
            fresh = self._acquire(scope)
            self._slots[scope] = fresh
            return fresh

    def invalidate(self, scope: str, token: str | None = None) -> None:
        """Forget the cached token for ``scope`` (a resource said it is expired or revoked).

        With ``token`` given, only that token is dropped: a thread that already replaced it keeps
        the replacement.
        """
        with self._scope_lock(scope):
            cached = self._slots.get(scope)
            if cached is not None and (token is None or cached.token == token):
                del self._slots[scope]
                self._drop_from_msal(scope, cached.token)

    def claims(self, scope: str) -> dict[str, Any]:
        """Claims of the current token for ``scope`` (aud, roles, tid, appid, exp...)."""
        return decode_claims(self.token(scope).token)

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()

    # -- internals ------------------------------------------------------------------------------

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(scope)
            if lock is None:
                lock = self._locks[scope] = threading.Lock()
            return lock

    def _acquire(self, scope: str) -> AccessToken:
        for attempt in (1, 2):
            app = self._application()
            self.acquisitions += 1
            try:
                result = app.acquire_token_for_client(scopes=[scope])
            except OutboxError:
                raise
            except Exception as exc:
                raise classify_msal_exception(exc) from exc
            if "access_token" in result:
                expires_in = float(result.get("expires_in") or 0)
                return AccessToken(result["access_token"], self._clock() + expires_in, scope)
            codes = {int(c) for c in result.get("error_codes") or () if str(c).isdigit()}
            if attempt == 1 and codes & CERTIFICATE_RETRY_CODES:
                log.warning("Entra rejected the client assertion (%s); re-reading the certificate", sorted(codes))
                self._certificates.invalidate()
                continue
            raise _classify_result(result, status=self._answer_status(result))
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer_status(self, result: Mapping[str, Any]) -> int | None:
        """The HTTP status of the token endpoint's answer behind an MSAL error result (MSAL drops it)."""
        answer = self._adapter.last_error() if self._adapter is not None else None
        if answer is None or answer.json().get("trace_id") != result.get("trace_id"):
            return None  # an error MSAL replayed from its throttling cache: no answer of ours to quote
        return answer.status

    def _application(self) -> msal.ConfidentialClientApplication:
        material = self._certificates.get()
        app = self._app
        if app is not None and self._app_thumbprint == material.thumbprint_sha1:
            return app
        with self._lock:
            if self._app is None or self._app_thumbprint != material.thumbprint_sha1:
                self._app = self._build(material)
                self._app_thumbprint = material.thumbprint_sha1
            return self._app

    def _build(self, material: CertificateMaterial) -> msal.ConfidentialClientApplication:
        import msal

        settings = self._settings
        if not settings.tenant_id or not settings.client_id:
            from shared.errors import ConfigError

            raise ConfigError(
                "the sending app registration is not configured",
                code="outbox.app_not_configured",
                transport="entra",
                hint="set OUTBOX_TENANT_ID and OUTBOX_CLIENT_ID",
            )
        if self._http is None:
            from shared.http import build_client

            self._http = build_client(settings)
        if self._cache is None:
            self._cache = msal.TokenCache()
        adapter = MsalHttpClient(self._http)
        self._adapter = adapter
        try:
            # OIDC discovery runs in the constructor: once per certificate, not per message.
            return msal.ConfidentialClientApplication(
                settings.client_id,
                client_credential=material.msal_credential(),
                authority=settings.authority,
                token_cache=self._cache,
                http_client=adapter,
                # Instance discovery asks login.microsoftonline.com about the authority host; an
                # authority that is not Microsoft's (the harness, a proxy) cannot be looked up.
                instance_discovery=settings.uses_microsoft_authority,
            )
        except OutboxError:
            raise
        except ValueError as exc:
            answer = adapter.last_error()
            raise classify_msal_exception(answer or exc) from exc
        except Exception as exc:
            raise classify_msal_exception(exc) from exc

    def _drop_from_msal(self, scope: str, token: str) -> None:
        cache = self._cache
        if cache is None:
            return
        stale = [
            item
            for item in cache.search(cache.CredentialType.ACCESS_TOKEN, target=[scope])
            if item.get("secret") == token
        ]
        for item in stale:
            cache.remove_at(item)


def _classify_result(result: Mapping[str, Any], *, status: int | None = None) -> OutboxError:
    from shared import classify

    return classify.classify_entra_error(result, status=status)


def classify_msal_exception(exc: Exception) -> OutboxError:
    """An exception out of MSAL (an HTTP error, a transport failure, a bad discovery) as an OutboxError."""
    from shared import classify

    if isinstance(exc, HttpStatusError):
        body = exc.json() or {"error": "http_error", "error_description": exc.body[:500]}
        return classify.classify_entra_error(body, status=exc.status)
    if isinstance(exc, httpx.HTTPError):
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return classify.classify_transport_exception(exc, transport="entra", request_sent=sent)
    if isinstance(exc, ValueError):
        # MSAL's ValueError for a failed discovery when no answer was kept (e.g. a bad document).
        return OutboxError(
            "config",
            "entra.discovery_failed",
            transport="entra",
            detail=str(exc),
            hint="check OUTBOX_TENANT_ID and OUTBOX_AUTHORITY_HOST / OUTBOX_CLOUD",
        )
    return classify.classify_transport_exception(exc, transport="entra", request_sent=True)
