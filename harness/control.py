"""The harness control API: JSON over https on its own port (loopback only). See docs/harness.md."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from harness import keyvault
from harness.faults import FaultRuleError
from harness.inbox import mail
from harness.runtime import HarnessRuntime
from harness.scenario import Scenario, ScenarioError
from harness.server import Endpoint
from harness.signins import SignInError
from harness.state import Delivery

RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("runtime", HarnessRuntime)
BASE_SCENARIO_KEY: web.AppKey[list[Scenario]] = web.AppKey("base_scenario", list)


def build_app(runtime: HarnessRuntime, *, base_scenario: Scenario | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RUNTIME_KEY] = runtime
    app[BASE_SCENARIO_KEY] = [base_scenario or runtime.scenario]
    app.router.add_get("/health", health)
    app.router.add_get("/deliveries", deliveries)
    # Paged and per-message reads (the inbox page; 10,000 deliveries stay fast). Before {id}: first match wins.
    app.router.add_get("/deliveries/page", deliveries_page)
    app.router.add_get("/deliveries/{id}", delivery_detail)
    app.router.add_get("/deliveries/{id}/source", delivery_source)
    app.router.add_get("/deliveries/{id}/attachments/{index}", delivery_attachment)
    app.router.add_get("/sent-items", sent_items)
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


PAGE_LIMIT_MAX = 500


def _int_query(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be an integer, not {raw!r}"}),
                                 content_type="application/json") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be between {low} and {high}"}),
                                 content_type="application/json")
    return value


def _app_names(runtime: HarnessRuntime) -> dict[str, str]:
    return {app.client_id.lower(): app.display_name or app.name for app in runtime.scenario.apps}


async def deliveries_page(request: web.Request) -> web.Response:
    """Newest first, ``limit`` summaries from ``offset``, filtered by transport, mailbox and text ``q``."""
    runtime = request.app[RUNTIME_KEY]
    offset = _int_query(request, "offset", 0, low=0, high=10**9)
    limit = _int_query(request, "limit", 50, low=1, high=PAGE_LIMIT_MAX)
    version = runtime.state.version
    items = runtime.state.deliveries(
        transport=request.query.get("transport") or None, mailbox=request.query.get("mailbox") or None
    )
    items.reverse()
    text = request.query.get("q", "").strip()
    names = _app_names(runtime)
    if text:
        items = [d for d in items if mail.matches(d, text)]
    total, page = len(items), [mail.summary(d, names) for d in items[offset:offset + limit]]
    return web.json_response({"total": total, "offset": offset, "limit": limit, "version": version, "items": page})


def _delivery_or_404(request: web.Request) -> Delivery:
    found = request.app[RUNTIME_KEY].state.delivery(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such delivery"}), content_type="application/json")
    return found


async def delivery_detail(request: web.Request) -> web.Response:
    delivery = _delivery_or_404(request)
    runtime = request.app[RUNTIME_KEY]
    return web.json_response({"summary": mail.summary(delivery, _app_names(runtime)),
                              "view": mail.view(delivery).to_dict(), "extra": dict(delivery.extra)})


async def delivery_source(request: web.Request) -> web.Response:
    """The raw MIME as the fake received it, or the Graph request body; text, never rendered."""
    mail_view = mail.view(_delivery_or_404(request))
    content_type = "message/rfc822" if mail_view.source_kind == "mime" else "application/json"
    return web.Response(text=mail_view.source, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "X-Source-Type": content_type})


async def delivery_attachment(request: web.Request) -> web.Response:
    """The part's bytes exactly as sent, always as a download (an HTML attachment must not run here)."""
    mail_view = mail.view(_delivery_or_404(request))
    try:
        part = mail_view.part(int(request.match_info["index"]))
    except ValueError:
        part = None
    if part is None or part.data is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such attachment (or its bytes were not kept)"}),
                               content_type="application/json")
    return web.Response(body=part.data, headers=attachment_headers(part.name))


def attachment_headers(filename: str) -> dict[str, str]:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"attachment; filename=\"{ascii_name or 'attachment'}\"; filename*=UTF-8''{quote(filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }


async def sent_items(request: web.Request) -> web.Response:
    """A mailbox's Sent Items as the fake Graph lists them (its delay applied), newest first."""
    runtime = request.app[RUNTIME_KEY]
    mailbox = request.query.get("mailbox", "").strip()
    if not mailbox:
        return _bad_request("mailbox is required")
    try:
        from harness.graph import sent_items_listing
    except ModuleNotFoundError:
        return web.json_response({"mailbox": mailbox, "value": []})
    return web.json_response({"mailbox": mailbox, "value": sent_items_listing(runtime, mailbox, harness_ids=True)})


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
