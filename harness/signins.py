"""What the fake Entra remembers about delegated sign-ins: device codes, authorization codes and refresh
tokens as server-side records (Entra's refresh tokens are opaque; their state lives with the issuer).

Thread-safe: the fake Entra writes from the loop thread, the control API and tests read from theirs.
Token values are kept only as SHA-256 digests, so no listing can leak one.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

DAY_S = 86_400.0
# Microsoft's user codes are 9 characters; letters and digits that cannot be misread.
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
USER_CODE_LENGTH = 9

DeviceStatus = Literal["pending", "approved", "declined", "redeemed"]


class SignInError(ValueError):
    """A control request that does not fit the records (unknown code, already answered...)."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class DeviceCode:
    device_code: str = field(repr=False)
    user_code: str
    client_id: str
    scope: str
    created: float
    expires_at: float
    interval_s: int
    status: DeviceStatus = "pending"
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The listing form: everything but the device code itself."""
        return {
            "user_code": self.user_code,
            "client_id": self.client_id,
            "scope": self.scope,
            "created": self.created,
            "expires_at": self.expires_at,
            "status": self.status,
            "user": self.user,
        }


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass(frozen=True)
class RefreshTokenRecord:
    id: str
    user: str
    client_id: str
    consented: tuple[str, ...]
    """The user's consented scopes when the token was issued (a refresh token serves every resource)."""
    issued_at: float
    last_used: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "client": self.client_id,
            "issued_at": self.issued_at,
            "last_used": self.last_used,
            "revoked": self.revoked,
        }


class SignInStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._device: dict[str, DeviceCode] = {}  # by digest of the device code
        self._auth: dict[str, AuthCode] = {}  # by digest of the code
        self._refresh: dict[str, RefreshTokenRecord] = {}  # by digest of the token

    def clear(self) -> None:
        with self._lock:
            self._device.clear()
            self._auth.clear()
            self._refresh.clear()

    # -- device codes -------------------------------------------------------------------------------------
    def new_device_code(
        self, *, client_id: str, scope: str, expires_in_s: int, interval_s: int, approved_by: str | None = None
    ) -> tuple[str, DeviceCode]:
        device_code = "DAQABAAEAAA" + secrets.token_urlsafe(96)
        now = time.time()
        with self._lock:
            while True:
                user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
                if all(d.user_code != user_code for d in self._device.values()):
                    break
            record = DeviceCode(
                device_code=device_code,
                user_code=user_code,
                client_id=client_id,
                scope=scope,
                created=now,
                expires_at=now + expires_in_s,
                interval_s=interval_s,
                status="approved" if approved_by else "pending",
                user=approved_by,
            )
            self._device[_digest(device_code)] = record
        return device_code, record

    def device_code(self, device_code: str) -> DeviceCode | None:
        with self._lock:
            record = self._device.get(_digest(device_code))
            return replace(record) if record else None

    def redeem_device_code(self, device_code: str) -> bool:
        """Mark an approved code used; False when it was not (still) approved."""
        with self._lock:
            record = self._device.get(_digest(device_code))
            if record is None or record.status != "approved":
                return False
            record.status = "redeemed"
            return True

    def pending_device_codes(self) -> list[DeviceCode]:
        now = time.time()
        with self._lock:
            return [replace(d) for d in self._device.values() if d.status == "pending" and d.expires_at > now]

    def answer_device_code(self, user_code: str, user: str, *, approve: bool) -> DeviceCode:
        wanted = user_code.replace("-", "").strip().upper()
        now = time.time()
        with self._lock:
            record = next((d for d in self._device.values() if d.user_code == wanted), None)
            if record is None:
                raise SignInError(f"no device code with user_code {user_code!r}", status=404)
            if record.expires_at <= now:
                raise SignInError(f"user_code {user_code!r} has expired")
            if record.status != "pending":
                raise SignInError(f"user_code {user_code!r} is already {record.status}")
            record.status = "approved" if approve else "declined"
            record.user = user
            return replace(record)

    # -- authorization codes ------------------------------------------------------------------------------
    def new_auth_code(self, record: AuthCode) -> str:
        code = "1.AQ" + secrets.token_urlsafe(180)
        with self._lock:
            self._auth[_digest(code)] = record
        return code

    def auth_code(self, code: str) -> AuthCode | None:
        with self._lock:
            record = self._auth.get(_digest(code))
            return replace(record) if record else None

    def redeem_auth_code(self, code: str) -> None:
        with self._lock:
            record = self._auth.get(_digest(code))
            if record is not None:
                record.redeemed = True

    # -- refresh tokens -----------------------------------------------------------------------------------
    def issue_refresh_token(self, *, user: str, client_id: str, consented: Iterable[str]) -> str:
        token = "1.AQ" + secrets.token_urlsafe(240)
        now = time.time()
        record = RefreshTokenRecord(
            id=uuid.uuid4().hex, user=user, client_id=client_id, consented=tuple(consented),
            issued_at=now, last_used=now,
        )
        with self._lock:
            self._refresh[_digest(token)] = record
        return token

    def refresh_token(self, token: str) -> RefreshTokenRecord | None:
        with self._lock:
            return self._refresh.get(_digest(token))

    def touch_refresh_token(self, token: str) -> None:
        key = _digest(token)
        with self._lock:
            record = self._refresh.get(key)
            if record is not None:
                self._refresh[key] = replace(record, last_used=time.time())

    def refresh_tokens(self, *, user: str | None = None) -> list[RefreshTokenRecord]:
        with self._lock:
            items = sorted(self._refresh.values(), key=lambda r: r.issued_at)
        return [r for r in items if user is None or r.user.lower() == user.lower()]

    def revoke(self, user: str) -> int:
        """Revoke every refresh token of ``user`` (revokeSignInSessions): AADSTS50173 afterwards."""
        now = time.time()
        return self._update(user, lambda r: replace(r, revoked_at=now) if not r.revoked else r)

    def age(self, user: str, days: float) -> int:
        """Move issue and last use of ``user``'s refresh tokens ``days`` into the past."""
        shift = days * DAY_S
        return self._update(user, lambda r: replace(r, issued_at=r.issued_at - shift, last_used=r.last_used - shift))

    def _update(self, user: str, change: Any) -> int:
        count = 0
        with self._lock:
            for key, record in list(self._refresh.items()):
                if record.user.lower() == user.lower():
                    self._refresh[key] = change(record)
                    count += 1
        return count
