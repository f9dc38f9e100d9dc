"""Who a mailbox's mail is sent as: the token-source seam between the transports and Entra.

A mailbox sends app-only (the certificate app's roles: ``/users/{mailbox}``, SMTP ``user=`` the
mailbox) unless OUTBOX_DELEGATED_MAILBOXES lists it; then it sends as the user who signed in for it
(``/me`` for their own mailbox, ``/users/{shared}`` with Mail.Send.Shared for a shared one; SMTP
``user=`` the signed-in UPN, which Exchange lets send as the shared address with a Send As grant). A
producer never chooses: the deployment's settings do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.signins.scopes import Resource
    from shared.signins.tokens import DelegatedTokens
    from shared.tokens import AccessToken, TokenProvider


@dataclass(frozen=True)
class AppCredential:
    tokens: TokenProvider
    settings: Settings
    mailbox: str
    mode: Literal["app"] = "app"
    user: None = None

    def _scope(self, resource: Resource) -> str:
        return self.settings.graph_scope if resource == "graph" else self.settings.smtp_scope

    def token(self, resource: Resource) -> AccessToken:
        return self.tokens.token(self._scope(resource))

    def invalidate(self, resource: Resource, token: str) -> None:
        self.tokens.invalidate(self._scope(resource), token)

    @property
    def graph_path(self) -> str:
        return f"users/{quote(self.mailbox, safe='@')}"

    @property
    def smtp_user(self) -> str:
        return self.mailbox


@dataclass(frozen=True)
class DelegatedCredential:
    tokens: DelegatedTokens
    mailbox: str
    account: str
    mode: Literal["delegated"] = "delegated"

    @property
    def user(self) -> str:
        return self.account

    def token(self, resource: Resource) -> AccessToken:
        return self.tokens.token(self.mailbox, self.account, resource)

    def invalidate(self, resource: Resource, token: str) -> None:
        self.tokens.invalidate(self.mailbox, resource, token)

    @property
    def graph_path(self) -> str:
        # /me sends from the signed-in user's own mailbox; /users/{shared} needs Mail.Send.Shared
        # and Full Access (Graph: "Send mail from another user", outlook-send-mail-from-other-user.md).
        return "me" if self.mailbox.lower() == self.account.lower() else f"users/{quote(self.mailbox, safe='@')}"

    @property
    def smtp_user(self) -> str:
        return self.account


# Both answer: mode, mailbox, user (the signed-in UPN, None for app-only), token(resource),
# invalidate(resource, token), graph_path (the Graph user segment) and smtp_user (XOAUTH2 user=).
MailboxCredential = AppCredential | DelegatedCredential


class Credentials:
    """The credential for each mailbox, per the deployment's settings."""

    def __init__(self, settings: Settings, app_tokens: TokenProvider, delegated: DelegatedTokens | None) -> None:
        self.settings = settings
        self.app_tokens = app_tokens
        self.delegated = delegated

    def for_mailbox(self, mailbox: str) -> MailboxCredential:
        account = self.settings.delegated_account(mailbox)
        if account is None:
            return AppCredential(self.app_tokens, self.settings, mailbox)
        if self.delegated is None:  # never fall back to the app's roles for a mailbox meant to be delegated
            from shared.errors import ConfigError

            raise ConfigError(f"{mailbox} sends delegated but no sign-in store was built",
                              code="outbox.delegated_not_configured", hint="build Senders with the sign-in store")
        return DelegatedCredential(self.delegated, mailbox.lower(), account)
