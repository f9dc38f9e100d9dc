"""The inbox page's server: static files from the package, the control API under ``/api/``, the HTML
body frame, a change stream, and outbox's side (status rows, poison, requeue) when given the settings.

Security model (the mail is attacker-controlled in a real mailbox, so it is here):
- the page renders every value with ``textContent`` and runs only its own script (``script-src 'self'``);
- an HTML body is a document of its own (``/frame/{id}``) shown in ``<iframe sandbox>`` without
  ``allow-scripts``, and the frame's own CSP forbids scripts too (``sandbox`` directive, ``default-src
  'none'``) and allows images only from this origin (inline ``cid:`` parts) until the person asks for
  remote images (``?remote=1``);
- attachments are downloads (``application/octet-stream``, ``Content-Disposition: attachment``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from harness import control
from harness.inbox import mail
from harness.inbox.outbox_side import OutboxSide
from harness.runtime import HarnessRuntime
from harness.scenario import Scenario
from harness.server import Endpoint
from shared import catalog

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
# Raster types only: an SVG opened on its own can script, so it is never served inline.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
EVENT_POLL_S = 0.2
HEARTBEAT_S = 15.0



class _OutboxSlot:
    """Which outbox the page shows; replaced while serving (a test points it at its own queue)."""

    outbox: OutboxSide | None = None


RUNTIME_KEY: web.AppKey[HarnessRuntime] = web.AppKey("inbox_runtime", HarnessRuntime)
OUTBOX_KEY: web.AppKey[_OutboxSlot] = web.AppKey("inbox_outbox", _OutboxSlot)


def build_app(runtime: HarnessRuntime, *, base_scenario: Scenario | None = None) -> web.Application:
    app = web.Application(middlewares=[_security_headers], client_max_size=1024 * 1024)
    app[RUNTIME_KEY] = runtime
    app[OUTBOX_KEY] = _OutboxSlot()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/events", events)
    app.router.add_get("/overview", overview)
    app.router.add_get("/catalog", catalog_entries)
    app.router.add_get("/frame/{id}", body_frame)
    app.router.add_get("/part/{id}/{index}", inline_part)
    app.router.add_get("/outbox/status", outbox_status)
    app.router.add_get("/outbox/poison", outbox_poison)
    app.router.add_post("/outbox/requeue", outbox_requeue)
    app.add_subapp("/api/", control.build_app(runtime, base_scenario=base_scenario))
    return app


def register(runtime: HarnessRuntime, *, base_scenario: Scenario | None = None) -> tuple[Endpoint, web.Application]:
    app = build_app(runtime, base_scenario=base_scenario)
    # Not in the request log: the page's reads would push the fakes' requests out of it.
    return runtime.host.add_app("inbox", app, log_requests=False), app


def connect_outbox(app: web.Application, outbox: OutboxSide | None) -> None:
    """Show outbox's side from these settings from now on (None: hide it)."""
    app[OUTBOX_KEY].outbox = outbox


# -- middleware ---------------------------------------------------------------------------------------


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _refusal(request: web.Request) -> str | None:
    """Why this request is not the page's own: another site's page in the same browser may reach a loopback
    port too (a form post, a rebound DNS name), and the page's requests change the harness."""
    host = (request.host or "").rsplit(":", 1)[0].lower()
    if host not in LOOPBACK_HOSTS:
        return f"Host {request.host!r} is not a loopback name"
    origin = request.headers.get("Origin")
    if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None \
            and origin != f"{request.scheme}://{request.host}":
        return f"a {request.method} from another origin ({origin!r})"
    return None


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    refusal = _refusal(request)
    if refusal is not None:
        refused = web.json_response({"error": f"refused: {refusal}"}, status=403)
        _harden(refused)
        return refused
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc)
        raise
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    if response.prepared:  # the event stream sets its own before it starts
        return
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")


# -- the page -----------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    return _static("index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    return _static(request.match_info["name"])


def _static(name: str) -> web.StreamResponse:
    path = STATIC / name
    kind = STATIC_TYPES.get(path.suffix)
    # Only files that are in the folder by name: no path ever leaves it.
    if kind is None or "/" in name or "\\" in name or not path.is_file() or path.parent != STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` with the deliveries' and the faults' versions whenever either moves.
    The page re-reads what it shows; nothing else is pushed."""
    runtime = request.app[RUNTIME_KEY]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})
    await response.prepare(request)
    last: tuple[Any, ...] | None = None
    idle = 0.0
    loop = asyncio.get_running_loop()
    while request.transport is not None and not request.transport.is_closing():
        now = _fingerprint(runtime)
        chunk = b""
        if now != last:
            last = now
            data = {"deliveries": now[0], "faults": now[1], "scenario": now[2]}
            chunk = f"event: change\ndata: {json.dumps(data)}\n\n".encode()
        elif loop.time() - idle > HEARTBEAT_S:
            chunk = b": keep-alive\n\n"
        if chunk:
            idle = loop.time()
            try:
                await response.write(chunk)
            except ConnectionError:  # aiohttp's ClientConnectionResetError is one
                break  # the page went away between two checks
        await asyncio.sleep(EVENT_POLL_S)
    return response


def _fingerprint(runtime: HarnessRuntime) -> tuple[Any, ...]:
    faults = tuple((f.get("id"), f.get("matched"), f.get("fired")) for f in runtime.faults.stats())
    return runtime.state.version, hash(faults), id(runtime.scenario)


async def overview(request: web.Request) -> web.Response:
    """The scenario at a glance, and whether outbox's side is connected."""
    runtime = request.app[RUNTIME_KEY]
    scenario = runtime.scenario
    outbox = request.app[OUTBOX_KEY].outbox
    return web.json_response({
        "scenario": scenario.name,
        "tenantId": scenario.tenant_id,
        "tenantDomain": scenario.tenant_domain,
        "sendingApp": scenario.sending_app,
        "mailboxes": [{"address": m.address, "displayName": m.display_name, "licensed": m.licensed,
                       "smtpAuthEnabled": m.smtp_auth_enabled, "shared": m.shared, "sendAs": list(m.send_as)}
                      for m in scenario.mailboxes],
        "apps": [{"name": a.name, "clientId": a.client_id, "displayName": a.display_name,
                  "graphRoles": list(a.graph_roles), "graphConsent": a.graph_consent,
                  "exchangeRoles": list(a.exchange_roles), "exchangeConsent": a.exchange_consent,
                  "graphMailboxes": list(a.graph.mailboxes)} for a in scenario.apps],
        "misconfigured": misconfigurations(scenario),
        "outbox": outbox.describe() if outbox is not None else None,
    })


def misconfigurations(scenario: Scenario) -> list[str]:
    """What in this scenario makes a send fail, in the words of the setting to change."""
    found: list[str] = []
    if not scenario.exchange.smtp_auth_enabled:
        found.append("exchange.smtp_auth_enabled = false: SMTP AUTH is off for the tenant (535 5.7.139)")
    if scenario.managed_identity.keyvault_role == "none":
        found.append("managed_identity.keyvault_role = \"none\": the function cannot read its certificate")
    for app in scenario.apps:
        where = f"apps.{app.name}"
        if not app.graph_consent:
            found.append(f"{where}.graph_consent = false: Graph tokens carry no roles (403)")
        if not app.exchange_consent:
            found.append(f"{where}.exchange_consent = false: SMTP tokens carry no SMTP.SendAsApp (535 5.7.3)")
        if not app.smtp.service_principal_registered:
            found.append(f"{where}.smtp.service_principal_registered = false: Exchange does not know the app")
        elif app.smtp.service_principal_object_id and app.smtp.service_principal_object_id != app.service_principal_id:
            found.append(f"{where}.smtp.service_principal_object_id is not the app's object id (535 5.7.3)")
        for cert in app.certificates:
            if cert.expired:
                found.append(f"{where}.certificates.{cert.label}.expired = true")
            if not cert.registered:
                found.append(f"{where}.certificates.{cert.label}.registered = false (AADSTS700027)")
    for box in scenario.mailboxes:
        if not box.smtp_auth_enabled:
            found.append(f"mailboxes.\"{box.address}\".smtp_auth_enabled = false (535 5.7.139)")
        if not box.licensed:
            found.append(f"mailboxes.\"{box.address}\".licensed = false")
    return found


async def catalog_entries(request: web.Request) -> web.Response:
    """The catalog by name, for the fault form (what a `reply` rule can answer)."""
    return web.json_response({"entries": [
        {"name": e.name, "transport": e.transport, "status": e.status, "code": e.code, "category": e.category,
         "stage": e.stage, "retryable": e.retryable}
        for e in catalog.entries()
    ]})


# -- the HTML body ------------------------------------------------------------------------------------

_CID = re.compile(r"cid:([^\"'\s>)]+)", re.IGNORECASE)
_META = re.compile(r"<meta\b[^>]*http-equiv[^>]*>", re.IGNORECASE)
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)


def frame_csp(origin: str, *, remote: bool) -> str:
    images = f"'self' {origin} data:" + (" https: http:" if remote else "")
    return (f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; font-src data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
            "sandbox allow-popups allow-popups-to-escape-sandbox")


def _delivery(request: web.Request) -> Any:
    found = request.app[RUNTIME_KEY].state.delivery(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text="no such delivery")
    return found


async def body_frame(request: web.Request) -> web.Response:
    """The HTML body as a document of its own, ``cid:`` references pointing at the inline parts."""
    delivery = _delivery(request)
    view = mail.view(delivery)
    remote = request.query.get("remote") == "1"
    origin = f"{request.scheme}://{request.host}"
    html = view.html if view.html is not None else ""
    parts = view.by_content_id()

    def resolve(match: re.Match[str]) -> str:
        part = parts.get(unquote(match.group(1)).strip("<>").lower())
        return f"{origin}/part/{delivery.id}/{part.index}" if part is not None else match.group(0)

    html = _META.sub("", _CID.sub(resolve, html))
    if not remote:
        html = _LINK.sub("", html)  # remote stylesheets and preconnects are remote loads too
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": frame_csp(origin, remote=remote)})


async def inline_part(request: web.Request) -> web.Response:
    """An inline image for the frame; anything that is not a raster image is a download instead."""
    view = mail.view(_delivery(request))
    try:
        part = view.part(int(request.match_info["index"]))
    except ValueError:
        part = None
    if part is None or part.data is None:
        raise web.HTTPNotFound()
    if part.content_type.lower() in INLINE_IMAGE_TYPES:
        return web.Response(body=part.data, content_type=part.content_type.lower(),
                            headers={"Content-Security-Policy": "default-src 'none'; sandbox"})
    return web.Response(body=part.data, headers=control.attachment_headers(part.name))


# -- outbox's side ------------------------------------------------------------------------------------


def _outbox(request: web.Request) -> OutboxSide:
    outbox = request.app[OUTBOX_KEY].outbox
    if outbox is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "the inbox was not given outbox's storage settings"}),
                               content_type="application/json")
    return outbox


async def _blocking(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def outbox_status(request: web.Request) -> web.Response:
    outbox = _outbox(request)
    wanted = request.query.get("internetMessageId") or None
    try:
        rows = await _blocking(lambda: outbox.status_rows(internet_message_id=wanted))
    except Exception as exc:  # storage down, settings wrong: the page says so instead of hanging
        return web.json_response({"error": f"{type(exc).__name__}: {_first_line(exc)}"}, status=502)
    return web.json_response({"rows": rows, **outbox.describe()})


async def outbox_poison(request: web.Request) -> web.Response:
    outbox = _outbox(request)
    code, document = await _blocking(outbox.poison)
    return web.json_response({"exitCode": code, **_as_object(document)}, status=200 if code == 0 else 502)


async def outbox_requeue(request: web.Request) -> web.Response:
    """Body: ``{"ids": [...]}`` or ``{"category": "...", "mailbox": "..."}``; answers the CLI's document."""
    outbox = _outbox(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    ids = body.get("ids") or []
    category, mailbox = body.get("category"), body.get("mailbox")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return web.json_response({"error": "ids must be a list of strings"}, status=400)
    if not ids and not isinstance(category, str):
        return web.json_response({"error": "say which messages: ids, or a category (and mailbox)"}, status=400)
    code, document = await _blocking(lambda: outbox.requeue(
        ids, category=category if isinstance(category, str) else None,
        mailbox=mailbox if isinstance(mailbox, str) else None))
    return web.json_response({"exitCode": code, **_as_object(document)})


def _as_object(document: Any) -> dict[str, Any]:
    return dict(document) if isinstance(document, Mapping) else {"output": document}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
