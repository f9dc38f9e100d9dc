"""Access tokens as Entra ID issues them (v1: app-only and delegated), and their validation by the fakes.

One ``TokenIssuer`` per harness holds the RSA signing key that the fake Entra publishes as JWKS. Fakes
(Graph, SMTP, Key Vault) call ``issuer.verify_access_token(token, audiences=...)`` and map the
``TokenRejected.reason`` to the catalog entry the real service answers with.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.pki import make_app_certificate

RejectReason = Literal[
    "malformed", "bad_signature", "expired", "not_yet_valid", "wrong_audience", "wrong_tenant"
]


@dataclass(frozen=True)
class Resource:
    """A resource (API) Entra issues tokens for: its identifier URI and its first-party app id."""

    name: str
    uri: str
    app_id: str

    @property
    def audiences(self) -> tuple[str, ...]:
        """Audiences the resource accepts: identifier URI (with or without '/') and app id."""
        return (self.uri, self.uri + "/", self.app_id)

    @property
    def default_scope(self) -> str:
        return self.uri + "/.default"


GRAPH = Resource("graph", "https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
EXCHANGE = Resource("exchange", "https://outlook.office365.com", "00000002-0000-0ff1-ce00-000000000000")
KEYVAULT = Resource("keyvault", "https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093")
# Delegated Outlook tokens (SMTP.Send) name this audience [guess, delegated-auth-notes §6]; Exchange
# accepts it alongside EXCHANGE's identifiers.
OUTLOOK_AUDIENCE = "https://outlook.office.com"
WELL_KNOWN_RESOURCES = (GRAPH, EXCHANGE, KEYVAULT)


def issuer_for(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


class TokenRejected(Exception):
    """Why a resource refuses a bearer token (``reason`` is one of ``RejectReason``)."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True)
class Claims:
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def app_id(self) -> str:
        return str(self.raw.get("appid") or self.raw.get("azp") or "")

    @property
    def tenant_id(self) -> str:
        return str(self.raw.get("tid", ""))

    @property
    def object_id(self) -> str:
        return str(self.raw.get("oid", ""))

    @property
    def audience(self) -> str:
        return str(self.raw.get("aud", ""))

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.raw.get("roles", ()))

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(str(self.raw.get("scp", "")).split())

    @property
    def expires_at(self) -> int:
        return int(self.raw.get("exp", 0))

    @property
    def is_app_only(self) -> bool:
        return self.raw.get("idtyp") == "app" or "scp" not in self.raw

    @property
    def upn(self) -> str:
        """The signed-in user's UPN (delegated tokens; empty for app-only)."""
        return str(self.raw.get("upn") or self.raw.get("unique_name") or "")

    def has_scope(self, *scopes: str) -> bool:
        """Whether ``scp`` holds any of ``scopes`` (case-insensitive, as resources compare them)."""
        held = {s.lower() for s in self.scopes}
        return any(s.lower() in held for s in scopes)

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class MintedToken:
    token: str
    claims: Claims
    expires_in: int

    @property
    def expires_on(self) -> int:
        return self.claims.expires_at


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TokenIssuer:
    """The harness's token signing key (one per running harness; tokens die with it)."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self._signing_cert = make_app_certificate("CN=accounts.accesscontrol.windows.net", key=key)
        self._key = self._signing_cert.private_key
        self._public = self._key.public_key()
        self.kid = self._signing_cert.x5t

    def jwks(self) -> dict[str, Any]:
        numbers = self._public.public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                    "x5c": [base64.b64encode(self._signing_cert.cert_der).decode()],
                }
            ]
        }

    def mint(
        self,
        *,
        tenant_id: str,
        client_id: str,
        object_id: str,
        audience: str,
        roles: Sequence[str] = (),
        lifetime_s: int = 3599,
        now: float | None = None,
        not_before: float | None = None,
        app_displayname: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        credential_kind: Literal["certificate", "secret", "managed_identity"] = "certificate",
    ) -> MintedToken:
        """An app-only v1 access token like Entra's for ``client_credentials`` or managed identity.

        ``roles`` is omitted when empty, as Entra does when no app role of the resource is consented.
        """
        issued = int(now if now is not None else time.time())
        iss = issuer_for(tenant_id)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": iss,
            "iat": issued,
            "nbf": int(not_before) if not_before is not None else issued,
            "exp": issued + int(lifetime_s),
            "aio": base64.b64encode(uuid.uuid4().bytes).decode(),
            "appid": client_id,
            "azp": client_id,
            "appidacr": {"certificate": "2", "secret": "1", "managed_identity": "2"}[credential_kind],
            "idp": iss,
            "idtyp": "app",
            "oid": object_id,
            "rh": "0.harness.",
            "sub": object_id,
            "tid": tenant_id,
            "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "ver": "1.0",
        }
        if app_displayname:
            claims["app_displayname"] = app_displayname
        if roles:
            claims["roles"] = list(dict.fromkeys(roles))
        if credential_kind == "managed_identity":
            claims["xms_mirid"] = (
                f"/subscriptions/harness/resourcegroups/harness/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{client_id}"
            )
        if extra_claims:
            claims.update(extra_claims)
        token = jwt.encode(
            claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5t": self.kid, "kid": self.kid}
        )
        return MintedToken(token=token, claims=Claims(claims), expires_in=int(lifetime_s))

    def mint_delegated(
        self,
        *,
        tenant_id: str,
        client_id: str,
        user_object_id: str,
        upn: str,
        name: str,
        audience: str,
        scopes: Sequence[str],
        lifetime_s: int = 3599,
        now: float | None = None,
    ) -> MintedToken:
        """A delegated v1 access token (a user signed in to a public client): ``scp``, ``upn``, the user's
        ``oid``/``sub``, ``idtyp`` "user", ``appidacr`` "0" ("For a public client, the value is 0")."""
        issued = int(now if now is not None else time.time())
        iss = issuer_for(tenant_id)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": iss,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime_s),
            "acr": "1",
            "aio": base64.b64encode(uuid.uuid4().bytes).decode(),
            "amr": ["pwd"],
            "appid": client_id,
            "azp": client_id,
            "appidacr": "0",
            "idtyp": "user",
            "ipaddr": "127.0.0.1",
            "name": name,
            "oid": user_object_id,
            "rh": "0.harness.",
            "scp": " ".join(dict.fromkeys(scopes)),
            "sub": user_object_id,
            "tid": tenant_id,
            "unique_name": upn,
            "upn": upn,
            "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "ver": "1.0",
        }
        token = jwt.encode(
            claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5t": self.kid, "kid": self.kid}
        )
        return MintedToken(token=token, claims=Claims(claims), expires_in=int(lifetime_s))

    def sign_id_token(self, claims: Mapping[str, Any]) -> str:
        """An OpenID Connect id_token signed with the key the discovery JWKS publishes."""
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers={"typ": "JWT", "kid": self.kid})

    def mint_access_token(self, **kwargs: Any) -> str:
        """Same arguments as ``mint``; only the compact JWT."""
        return self.mint(**kwargs).token

    def verify_access_token(
        self,
        token: str,
        *,
        audiences: Iterable[str],
        tenant_id: str | None = None,
        now: float | None = None,
        leeway_s: float = 0,
    ) -> Claims:
        """Validate signature, lifetime, audience and tenant like a Microsoft resource does."""
        if not isinstance(token, str) or token.count(".") != 2:
            raise TokenRejected("malformed", "not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenRejected("malformed", str(exc)) from exc
        if header.get("kid", header.get("x5t")) not in (self.kid, None):
            raise TokenRejected("bad_signature", "unknown signing key")
        try:
            raw = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("bad_signature", str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("malformed", str(exc)) from exc
        moment = now if now is not None else time.time()
        for claim in ("exp", "nbf"):
            if not isinstance(raw.get(claim), int | float):
                raise TokenRejected("malformed", f"missing {claim}")
        if moment >= raw["exp"] + leeway_s:
            raise TokenRejected("expired", "Lifetime validation failed, the token is expired.")
        if moment + leeway_s < raw["nbf"]:
            raise TokenRejected("not_yet_valid", "The token is not yet valid.")
        allowed = set(audiences)
        if raw.get("aud") not in allowed:
            raise TokenRejected("wrong_audience", f"audience {raw.get('aud')!r} not in {sorted(allowed)}")
        if tenant_id is not None and (raw.get("tid") != tenant_id or raw.get("iss") != issuer_for(tenant_id)):
            raise TokenRejected("wrong_tenant", f"token issued for tenant {raw.get('tid')!r}")
        return Claims(raw)


def unverified_claims(token: str) -> Claims:
    """Claims without validation (for diagnostics, e.g. doctor printing aud/roles)."""
    return Claims(jwt.decode(token, options={"verify_signature": False}))
