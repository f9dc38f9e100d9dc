"""Fake Key Vault (secrets API) holding the sending app's certificate, with real challenge auth.

The vault lives at ``https://127.0.0.1:PORT``. The Key Vault SDK only accepts a challenge whose resource
domain is a dotted suffix of the vault's host[:port] (a check production code keeps ON), and no dotted
host name resolves to loopback on these machines. So the challenge names the resource
``https://0.0.1:PORT``: "127.0.0.1:PORT" ends with ".0.0.1:PORT". Tokens for that resource
(``https://0.0.1:PORT/.default``) are issued by the fake managed-identity endpoint and the fake Entra,
and it is the audience this vault accepts. Against real Azure the resource is ``https://vault.azure.net``.

Secrets: ``outbox-signin-key`` (``SIGNIN_KEY_NAME``) is the key delegated sign-ins are sealed with, as
``infra/scripts/create-signin-key.sh`` creates it (32 random bytes, base64, new per harness run);
``{cert_name}`` is the certificate as Key Vault exposes it through the secrets API (base64 PFX,
``application/x-pkcs12``, ``managed: true``, ``kid``); ``{cert_name}-pem`` the same key and certificate
as PEM (``application/x-pem-file``).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harness.credentials import VaultVersion
from harness.faults import aiohttp_middleware
from harness.runtime import HarnessRuntime
from harness.server import Endpoint
from harness.tokens import TokenRejected

RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("runtime", HarnessRuntime)
SIGNIN_KEY_NAME = "outbox-signin-key"


@dataclass(frozen=True)
class PlainSecret:
    value: str
    version: str
    created: dt.datetime


PLAIN_KEY: web.AppKey[dict[str, PlainSecret]] = web.AppKey("plain_secrets", dict)
PEM_SUFFIX = "-pem"
VAULT_NAME = "outbox-harness-kv"
LOCATION = "westeurope"


def challenge_resource(port: int) -> str:
    """The resource a vault at https://127.0.0.1:PORT names in its challenge (see module docstring)."""
    return f"https://0.0.1:{port}"


def build_app(runtime: HarnessRuntime) -> web.Application:
    app = web.Application(
        middlewares=[aiohttp_middleware(runtime.faults, "keyvault", operation_of=lambda r: "getSecret")]
    )
    app[RUNTIME_KEY] = runtime
    app[PLAIN_KEY] = {
        SIGNIN_KEY_NAME: PlainSecret(base64.b64encode(os.urandom(32)).decode(), uuid.uuid4().hex, dt.datetime.now(dt.UTC))
    }
    app.router.add_get("/secrets/{name}/versions", list_versions)
    app.router.add_get("/secrets/{name}", get_secret)
    app.router.add_get("/secrets/{name}/", get_secret)
    app.router.add_get("/secrets/{name}/{version}", get_secret)
    return app


def register(runtime: HarnessRuntime) -> Endpoint:
    endpoint = runtime.host.add_app("keyvault", build_app(runtime))
    runtime.keyvault_resource = challenge_resource(endpoint.port)
    return endpoint


def rotate(runtime: HarnessRuntime, *, keep_old: bool = True, register_key: bool = True) -> VaultVersion:
    """New certificate version: latest in the vault, its key registered on the app (old key kept valid
    unless ``keep_old`` is false)."""
    return runtime.credentials.rotate(runtime.scenario, keep_old=keep_old, register=register_key)


# -- handlers ---------------------------------------------------------------------------------------------


def _vault_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _kv_error(entry: str, **fmt: Any) -> web.Response:
    """The catalog's Key Vault error body. Built from ``catalog.entry`` rather than
    ``replies.keyvault_error`` because that helper's own ``name`` parameter collides with the
    ``{name}`` placeholder of ``keyvault.secret_not_found`` (reported to the catalog owner)."""
    from shared import catalog

    row = catalog.entry(entry)
    error: dict[str, Any] = {"code": row.code, "message": row.render(**fmt)}
    if row.inner_code:
        error["innererror"] = {"code": row.inner_code}
    assert row.status is not None
    return web.json_response({"error": error}, status=row.status, headers={"x-harness-catalog": entry})


def _challenge(request: web.Request, runtime: HarnessRuntime) -> dict[str, str]:
    entra = (
        runtime.host.endpoint("entra").url
        if "entra" in runtime.endpoints
        else "https://login.microsoftonline.com"
    )
    return {
        "WWW-Authenticate": (
            f'Bearer authorization="{entra}/{runtime.scenario.tenant_id}", resource="{runtime.keyvault_resource}"'
        )
    }


def _authorize(request: web.Request, runtime: HarnessRuntime, secret_path: str) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        response = _kv_error("keyvault.unauthorized")
        response.headers.update(_challenge(request, runtime))
        return response
    try:
        claims = runtime.verify(header[7:].strip(), "keyvault")
    except TokenRejected:
        response = _kv_error("keyvault.unauthorized")
        response.headers.update(_challenge(request, runtime))
        return response
    identity = runtime.scenario.managed_identity
    if claims.object_id.lower() != identity.object_id.lower() or not identity.may_read_secrets():
        return _kv_error(
            "keyvault.forbidden",
            caller=f"appid={claims.app_id};oid={claims.object_id}",
            resource=f"/subscriptions/harness/resourcegroups/harness/providers/microsoft.keyvault/vaults/{VAULT_NAME}{secret_path}",
            vault=VAULT_NAME,
            location=LOCATION,
        )
    return None


def _lookup(runtime: HarnessRuntime, name: str) -> tuple[bool, str] | None:
    """(is_pem, certificate name) when ``name`` is one of the vault's secrets."""
    cert_name = runtime.scenario.keyvault.certificate_name
    if name.lower() == cert_name.lower():
        return False, cert_name
    if name.lower() == (cert_name + PEM_SUFFIX).lower():
        return True, cert_name + PEM_SUFFIX
    return None


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def _bundle(
    vault: str, name: str, version: VaultVersion, *, pem: bool, with_value: bool = True
) -> dict[str, Any]:
    cert = version.certificate
    bundle: dict[str, Any] = {
        "id": f"{vault}/secrets/{name}/{version.version}",
        "contentType": "application/x-pem-file" if pem else "application/x-pkcs12",
        "attributes": {
            "enabled": version.enabled,
            "nbf": _epoch(cert.not_before),
            "exp": _epoch(cert.not_after),
            "created": _epoch(version.created),
            "updated": _epoch(version.created),
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {},
        "kid": f"{vault}/keys/{name}/{version.version}",
        "managed": True,
    }
    if with_value:
        bundle = {"value": cert.pem_bundle().decode() if pem else cert.pfx_base64(), **bundle}
    return bundle


def _plain_bundle(vault: str, name: str, secret: PlainSecret) -> dict[str, Any]:
    created = _epoch(secret.created)
    return {
        "value": secret.value,
        "id": f"{vault}/secrets/{name}/{secret.version}",
        "attributes": {"enabled": True, "created": created, "updated": created,
                       "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
        "tags": {},
    }


async def get_secret(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    name = request.match_info["name"]
    version_id = request.match_info.get("version", "")
    denied = _authorize(request, runtime, f"/secrets/{name}")
    if denied is not None:
        return denied
    if "api-version" not in request.query:
        return _kv_error("keyvault.client_error")
    plain = request.app[PLAIN_KEY].get(name.lower())
    if plain is not None and version_id in ("", plain.version):
        return web.json_response(_plain_bundle(_vault_url(request), name.lower(), plain))
    found = _lookup(runtime, name)
    version = None
    if found is not None:
        version = (
            runtime.credentials.vault_version(version_id)
            if version_id
            else runtime.credentials.vault_latest()
        )
    if found is None or version is None:
        return _kv_error("keyvault.secret_not_found", name=name)
    pem, secret_name = found
    return web.json_response(_bundle(_vault_url(request), secret_name, version, pem=pem))


async def list_versions(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    name = request.match_info["name"]
    denied = _authorize(request, runtime, f"/secrets/{name}/versions")
    if denied is not None:
        return denied
    found = _lookup(runtime, name)
    if found is None:
        return _kv_error("keyvault.secret_not_found", name=name)
    pem, secret_name = found
    items = [
        _bundle(_vault_url(request), secret_name, v, pem=pem, with_value=False)
        for v in runtime.credentials.vault_versions()
    ]
    return web.json_response({"value": items, "nextLink": None})
