"""AES-256-GCM for the stored token caches: pure functions, no I/O.

The mailbox and the record's schema are the associated data, so a sealed cache copied onto another
mailbox's record does not open. A fresh 96-bit nonce per seal (random: a sign-in is rewritten a few
times a day, far from GCM's 2^32 random-nonce bound per key).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(ValueError):
    """The sealed bytes do not open with this key (wrong key, another mailbox's record, tampering)."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def parse_key(text: str) -> bytes:
    """The key as Key Vault holds it: base64 of 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise SealError("the sign-in key is not base64") from exc
    if len(key) != KEY_BYTES:
        raise SealError(f"the sign-in key is {len(key)} bytes; expected {KEY_BYTES} (AES-256)")
    return key


def seal(key: bytes, plaintext: bytes, *, context: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, context.encode())
    return base64.b64encode(nonce + sealed).decode("ascii")


def unseal(key: bytes, sealed: str, *, context: str) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
    except (ValueError, InvalidTag) as exc:
        raise SealError("the stored sign-in does not open with the current key") from exc
