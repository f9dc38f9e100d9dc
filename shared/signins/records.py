"""One stored sign-in: what ``outbox accounts`` shows in the clear, and the sealed MSAL token cache.

Only the cache is secret (it holds the refresh token); the rest (who signed in, when it was last
refreshed, whether it needs a new sign-in) is plain so that listing accounts needs no key.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

SCHEMA = "outbox.signin/1"
INACTIVITY_LIMIT = dt.timedelta(days=90)  # Entra's MaxInactiveTime for refresh tokens (refresh-tokens.md)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def _parse(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class DeadSignIn:
    """Why the mailbox needs a new sign-in (an Entra code such as AADSTS50173, its words, the fix)."""

    code: str
    detail: str
    hint: str
    at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "hint": self.hint, "at": _iso(self.at)}


@dataclass(frozen=True)
class SigninRecord:
    mailbox: str
    account: str  # the user who signed in (the mailbox itself, or a delegate of a shared mailbox)
    signed_in_at: dt.datetime
    sealed_cache: str = field(repr=False)
    scopes: dict[str, list[str]] = field(default_factory=dict)  # "graph"/"smtp" -> consented scopes
    last_refresh: dt.datetime | None = None  # last time Entra issued tokens from the refresh token
    dead: DeadSignIn | None = None

    @property
    def shared(self) -> bool:
        return self.mailbox != self.account

    @property
    def refreshed_at(self) -> dt.datetime:
        """When the refresh token last changed hands (each refresh returns a new one)."""
        return self.last_refresh or self.signed_in_at

    def inactive_after(self) -> dt.datetime:
        return self.refreshed_at + INACTIVITY_LIMIT

    def with_refresh(self, sealed_cache: str, at: dt.datetime) -> SigninRecord:
        return replace(self, sealed_cache=sealed_cache, last_refresh=at, dead=None)

    def as_dead(self, dead: DeadSignIn) -> SigninRecord:
        return replace(self, dead=dead)

    def summary(self, now: dt.datetime) -> dict[str, Any]:
        """The record without the cache: what accounts, doctor and events may show."""
        return {
            "mailbox": self.mailbox,
            "account": self.account,
            "shared": self.shared,
            "signedInAt": _iso(self.signed_in_at),
            "lastRefresh": _iso(self.last_refresh),
            "refreshTokenAgeDays": round((now - self.refreshed_at).total_seconds() / 86400, 1),
            "inactiveAfter": _iso(self.inactive_after()),
            "scopes": self.scopes,
            "needsSignIn": self.dead.as_json() if self.dead else None,
        }

    def to_bytes(self) -> bytes:
        body = {
            "schema": SCHEMA,
            "mailbox": self.mailbox,
            "account": self.account,
            "signedInAt": _iso(self.signed_in_at),
            "lastRefresh": _iso(self.last_refresh),
            "scopes": self.scopes,
            "needsSignIn": self.dead.as_json() if self.dead else None,
            "cache": self.sealed_cache,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SigninRecord:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("schema") != SCHEMA:
            raise ValueError(f"not an {SCHEMA} record")
        dead = body.get("needsSignIn")
        signed_in = _parse(body.get("signedInAt"))
        if signed_in is None:
            raise ValueError("the record has no signedInAt")
        return cls(
            mailbox=str(body["mailbox"]),
            account=str(body["account"]),
            signed_in_at=signed_in,
            sealed_cache=str(body.get("cache") or ""),
            scopes={str(k): [str(s) for s in v] for k, v in (body.get("scopes") or {}).items()},
            last_refresh=_parse(body.get("lastRefresh")),
            dead=DeadSignIn(str(dead.get("code", "")), str(dead.get("detail", "")), str(dead.get("hint", "")),
                            _parse(dead.get("at")) or signed_in) if isinstance(dead, dict) else None,
        )


def cache_context(mailbox: str) -> str:
    """The associated data a mailbox's cache is sealed with."""
    return f"{SCHEMA}|{mailbox.lower()}"
