"""Fake App Service managed-identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

azure-identity's ``ManagedIdentityCredential`` (and so ``DefaultAzureCredential``) sends
``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>[&client_id=<uami>]`` with header
``X-IDENTITY-HEADER: {IDENTITY_HEADER}``. Only the scenario's function identity exists here.

App Service's exact error bodies are not documented; the ones below are assumptions (docs/harness.md).
"""

from __future__ import annotations

import secrets
import uuid

from aiohttp import web

from harness.faults import aiohttp_middleware
from harness.runtime import HarnessRuntime
from harness.server import Endpoint

PATH = "/msi/token"
API_VERSION = "2019-08-01"
RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("runtime", HarnessRuntime)
HEADER_KEY: web.AppKey[str] = web.AppKey("identity_header", str)


def build_app(runtime: HarnessRuntime, identity_header: str) -> web.Application:
    app = web.Application(
        middlewares=[aiohttp_middleware(runtime.faults, "msi", operation_of=lambda _: "token")]
    )
    app[RUNTIME_KEY] = runtime
    app[HEADER_KEY] = identity_header
    app.router.add_get(PATH, token)
    return app


def register(runtime: HarnessRuntime, identity_header: str | None = None) -> tuple[Endpoint, str, str]:
    """Start the endpoint; returns (endpoint, IDENTITY_ENDPOINT value, IDENTITY_HEADER value)."""
    header = identity_header or secrets.token_hex(16)
    endpoint = runtime.host.add_app("msi", build_app(runtime, header))
    return endpoint, endpoint.url + PATH, header


def _problem(status: int, message: str) -> web.Response:
    return web.json_response(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, status=status
    )


async def token(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    if request.headers.get("X-IDENTITY-HEADER") != request.app[HEADER_KEY]:
        return _problem(401, "X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER.")
    if request.query.get("api-version") != API_VERSION:
        return _problem(400, f"api-version must be {API_VERSION}.")
    resource = request.query.get("resource", "")
    if not resource:
        return _problem(400, "The 'resource' query parameter is required.")
    scenario = runtime.scenario
    identity = scenario.managed_identity
    requested = {
        key: request.query[key]
        for key in ("client_id", "object_id", "principal_id", "mi_res_id")
        if key in request.query
    }
    wanted = requested.get("client_id") or None
    wanted_oid = requested.get("object_id") or requested.get("principal_id")
    if (wanted and wanted.lower() != identity.client_id.lower()) or (
        wanted_oid and wanted_oid.lower() != identity.object_id.lower()
    ):
        return _problem(400, "Unable to load the proper Managed Identity.")
    resource_id = resource.removesuffix("/.default")
    minted = runtime.tokens.mint(
        tenant_id=scenario.tenant_id,
        client_id=identity.client_id,
        object_id=identity.object_id,
        audience=resource_id,
        lifetime_s=scenario.token_lifetime_s,
        credential_kind="managed_identity",
    )
    return web.json_response(
        {
            "access_token": minted.token,
            "expires_on": str(minted.expires_on),
            "resource": resource_id,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }
    )
