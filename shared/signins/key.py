"""The sealing key: a Key Vault secret, read once per process with the identity that runs.

Why Key Vault and not the storage account: the key must not sit next to the ciphertext (whoever
can read the container could then read every refresh token). The function's identity may already
read secrets in this vault (the certificate); storage-only readers (a producer team granted the
attachment container, a support engineer with Storage Blob Data Reader) get ciphertext only. The key
is created once, at provisioning (infra/scripts/create-signin-key.sh, an azd hook), not by outbox.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError, OutboxError
from shared.signins.sealing import SealError, parse_key

if TYPE_CHECKING:
    from shared.settings import Settings


class SigninKey:
    def __init__(self, settings: Settings, credential: Any = None, *, secret_client: Any = None) -> None:
        self._settings = settings
        self._credential = credential
        self._client = secret_client
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        key = self._key
        if key is not None:
            return key
        with self._lock:
            if self._key is None:
                self._key = self._read()
            return self._key

    def _read(self) -> bytes:
        from shared.certificates import classify_vault_failure, vault_client

        settings = self._settings
        if not settings.keyvault_url:
            raise ConfigError(
                "delegated sign-ins need the Key Vault that holds their key",
                code="outbox.signin_key_not_configured", hint="set OUTBOX_KEYVAULT_URL",
            )
        if self._client is None:
            self._client, self._credential = vault_client(settings, self._credential)
        try:
            secret = self._client.get_secret(settings.signin_key_name)
        except Exception as exc:
            err = classify_vault_failure(exc, settings)
            if err.status == 404:
                err = err.replace(hint=f"create the sign-in key once: infra/scripts/create-signin-key.sh "
                                       f"(secret {settings.signin_key_name!r}, 32 random bytes, base64)")
            raise err from exc
        try:
            return parse_key(secret.value or "")
        except SealError as exc:
            raise OutboxError("config", "outbox.signin_key_unusable", transport="keyvault",
                              detail=f"secret {settings.signin_key_name!r}: {exc}",
                              hint="the secret must hold 32 random bytes, base64 (create-signin-key.sh)") from exc

    def close(self) -> None:
        for obj in (self._client, self._credential):
            close = getattr(obj, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # closing is best effort
                    close()
