"""The per-process bundle of everything expensive that sending needs, built once and shared.

Certificate (Key Vault), MSAL app and token cache, the SSL context and keep-alive HTTP client, SMTP
session pools and per-mailbox pacing live for the life of the worker process. The Functions worker
runs sync functions in a thread pool, so everything here is thread-safe; transports are built on
first use (a Graph-only deployment never imports smtplib, and nothing touches the network until the
first message).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from shared.certificates import CertificateProvider
from shared.credentials import Credentials
from shared.pacing import Pacing
from shared.tokens import TokenProvider

if TYPE_CHECKING:
    import httpx

    from shared.settings import Settings
    from shared.signins.store import SigninStore
    from shared.signins.tokens import DelegatedTokens
    from shared.transports.base import Transport

TRANSPORTS = ("graph", "smtp")


class Senders:
    def __init__(
        self,
        settings: Settings,
        *,
        certificates: CertificateProvider,
        tokens: TokenProvider,
        pacing: Pacing,
        http_client: httpx.Client,
        delegated: DelegatedTokens | None = None,
    ) -> None:
        self.settings = settings
        self.certificates = certificates
        self.tokens = tokens
        self.delegated = delegated
        self.credentials = Credentials(settings, tokens, delegated)
        self.pacing = pacing
        self.http_client = http_client
        self._transports: dict[str, Transport] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: Any = None,
        pacing: Pacing | None = None,
        signins: SigninStore | None = None,
    ) -> Senders:
        """``credential`` defaults to DefaultAzureCredential (the managed identity on Functions).
        ``signins``: the sign-in store, needed when OUTBOX_DELEGATED_MAILBOXES names any mailbox."""
        from shared.http import build_client

        http_client = build_client(settings)
        certificates = CertificateProvider(settings, credential)
        tokens = TokenProvider(settings, certificates, http_client=http_client)
        delegated = None
        if signins is not None and settings.delegated_mailboxes:
            from shared.signins.key import SigninKey
            from shared.signins.tokens import DelegatedTokens

            delegated = DelegatedTokens(settings, signins, SigninKey(settings, credential), http_client)
        return cls(
            settings,
            certificates=certificates,
            tokens=tokens,
            pacing=pacing or Pacing.from_settings(settings),
            http_client=http_client,
            delegated=delegated,
        )

    def transport(self, name: str) -> Transport:
        existing = self._transports.get(name)
        if existing is not None:
            return existing
        if name not in TRANSPORTS:
            raise ValueError(f"unknown transport {name!r}; expected one of {', '.join(TRANSPORTS)}")
        with self._lock:
            if self._closed:
                raise RuntimeError("Senders is closed")
            existing = self._transports.get(name)
            if existing is None:
                existing = self._transports[name] = self._build(name)
            return existing

    def _build(self, name: str) -> Transport:
        if name == "graph":
            from shared.transports.graph import GraphTransport

            return GraphTransport(self.settings, self.credentials, self.pacing, self.http_client)
        from shared.transports.smtp import SmtpTransport

        return SmtpTransport(self.settings, self.credentials, self.pacing)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            transports = list(self._transports.values())
            self._transports.clear()
        for transport in transports:
            transport.close()
        self.tokens.close()
        if self.delegated is not None:
            self.delegated.close()
        self.certificates.close()
        self.http_client.close()

    def __enter__(self) -> Senders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
