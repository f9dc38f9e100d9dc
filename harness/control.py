"""The harness control API: JSON over https on its own port (loopback only). See docs/harness.md."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from harness import keyvault
from harness.faults import FaultRuleError
from harness.runtime import HarnessRuntime
from harness.scenario import Scenario, ScenarioError
from harness.server import Endpoint
from harness.signins import SignInError

RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("runtime", HarnessRuntime)
BASE_SCENARIO_KEY: web.AppKey[list[Scenario]] = web.AppKey("base_scenario", list)


def build_app(runtime: HarnessRuntime, *, base_scenario: Scenario | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RUNTIME_KEY] = runtime
    app[BASE_SCENARIO_KEY] = [base_scenario or runtime.scenario]
    app.router.add_get("/health", health)
    app.router.add_get("/deliveries", deliveries)
    app.router.add_post("/reset", reset)
    app.router.add_get("/faults", list_faults)
    app.router.add_post("/faults", add_faults)
    app.router.add_delete("/faults", clear_faults)
    app.router.add_delete("/faults/{id}", delete_fault)
    app.router.add_post("/keyvault/rotate", rotate)
    app.router.add_get("/scenario", get_scenario)
    app.router.add_post("/scenario", post_scenario)
    app.router.add_get("/requests", requests)
    app.router.add_get("/devicecodes", list_device_codes)
    app.router.add_post("/devicecodes/approve", approve_device_code)
    app.router.add_post("/devicecodes/decline", decline_device_code)
    app.router.add_get("/refresh-tokens", list_refresh_tokens)
    app.router.add_post("/refresh-tokens/revoke", revoke_refresh_tokens)
    app.router.add_post("/refresh-tokens/age", age_refresh_tokens)
    return app


def register(runtime: HarnessRuntime, *, base_scenario: Scenario | None = None) -> Endpoint:
    return runtime.host.add_app("control", build_app(runtime, base_scenario=base_scenario))


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc


async def health(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    return web.json_response(
        {
            "ok": True,
            "scenario": runtime.scenario.name,
            "endpoints": {n: e.url for n, e in runtime.endpoints.items()},
        }
    )


async def deliveries(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    items = runtime.state.deliveries(
        transport=request.query.get("transport") or None, mailbox=request.query.get("mailbox") or None
    )
    return web.json_response({"deliveries": [d.to_dict() for d in items]})


async def reset(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    keep_scenario = bool(body.get("keepScenario", False)) if isinstance(body, dict) else False
    runtime.reset(None if keep_scenario else request.app[BASE_SCENARIO_KEY][0])
    await runtime.sync_down_services_async()
    return web.json_response({"ok": True, "scenario": runtime.scenario.name})


async def list_faults(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    return web.json_response({"faults": runtime.faults.stats(), "seed": runtime.faults.seed})


async def add_faults(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    rules = body if isinstance(body, list) else body.get("faults", [body]) if isinstance(body, dict) else []
    added = []
    try:
        if isinstance(body, dict) and "seed" in body and "faults" in body:
            runtime.faults.reseed(int(body["seed"]))
        for rule in rules:
            added.append(runtime.faults.add(rule))
    except (FaultRuleError, TypeError, ValueError) as exc:
        for rule in added:
            runtime.faults.remove(rule.id)
        return _bad_request(str(exc))
    await runtime.sync_down_services_async()
    return web.json_response({"faults": [r.to_dict() for r in added]}, status=201)


async def clear_faults(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    runtime.faults.clear()
    await runtime.sync_down_services_async()
    return web.json_response({"ok": True})


async def delete_fault(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    removed = runtime.faults.remove(request.match_info["id"])
    await runtime.sync_down_services_async()
    if not removed:
        return web.json_response({"error": "no such fault rule"}, status=404)
    return web.json_response({"ok": True})


async def rotate(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    keep_old = bool(body.get("keepOld", True)) if isinstance(body, dict) else True
    # RSA key generation takes tens of milliseconds: keep the loop serving meanwhile.
    version = await asyncio.get_running_loop().run_in_executor(
        None, lambda: keyvault.rotate(runtime, keep_old=keep_old)
    )
    return web.json_response(
        {
            "version": version.version,
            "thumbprint": version.certificate.thumbprint,
            "notAfter": version.certificate.not_after.isoformat(),
            "certificateName": runtime.scenario.keyvault.certificate_name,
        }
    )


async def get_scenario(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME_KEY].scenario.to_dict())


async def post_scenario(request: web.Request) -> web.Response:
    """Body: a whole scenario (TOML-shaped JSON), or ``{"patch": {...}}`` merged into the current one, or
    ``{"toml": "..."}``."""
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _bad_request("the body must be a JSON object")
    try:
        if "patch" in body:
            scenario = runtime.scenario.with_changes(body["patch"])
        elif "toml" in body:
            scenario = Scenario.from_toml(str(body["toml"]))
        else:
            scenario = Scenario.from_dict(body)
    except ScenarioError as exc:
        return _bad_request(str(exc))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, runtime.set_scenario, scenario)
    return web.json_response(scenario.to_dict())


async def requests(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    return web.json_response({"counters": runtime.state.counters()})


# -- delegated sign-ins ----------------------------------------------------------------------------------


def _field(body: Any, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"'{name}' (a non-empty string) is required"}), content_type="application/json"
        )
    return value.strip()


def _scenario_user(runtime: HarnessRuntime, address: str) -> str:
    user = runtime.scenario.user(address)
    if user is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no user {address!r} in the scenario"}), content_type="application/json"
        )
    return user.address


async def list_device_codes(request: web.Request) -> web.Response:
    """Pending device codes (a test finds the user_code here), never the device codes themselves."""
    runtime = request.app[RUNTIME_KEY]
    return web.json_response({"devicecodes": [d.to_dict() for d in runtime.sign_ins.pending_device_codes()]})


async def _answer_device_code(request: web.Request, *, approve: bool) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    user_code = _field(body, "user_code")
    user = _scenario_user(runtime, _field(body, "user"))
    try:
        record = runtime.sign_ins.answer_device_code(user_code, user, approve=approve)
    except SignInError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    return web.json_response(record.to_dict())


async def approve_device_code(request: web.Request) -> web.Response:
    return await _answer_device_code(request, approve=True)


async def decline_device_code(request: web.Request) -> web.Response:
    return await _answer_device_code(request, approve=False)


async def list_refresh_tokens(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    items = runtime.sign_ins.refresh_tokens(user=request.query.get("user") or None)
    return web.json_response({"refresh_tokens": [r.to_dict() for r in items]})


async def revoke_refresh_tokens(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    user = _scenario_user(runtime, _field(body, "user"))
    return web.json_response({"revoked": runtime.sign_ins.revoke(user)})


async def age_refresh_tokens(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    body = await _json_body(request)
    user = _scenario_user(runtime, _field(body, "user"))
    days = body.get("days")
    if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
        return _bad_request("'days' (a number >= 0) is required")
    return web.json_response({"aged": runtime.sign_ins.age(user, float(days))})
