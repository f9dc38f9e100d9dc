"""The fake Microsoft Graph mail endpoints (aiohttp, served over TLS by the harness's service host).

What it emulates, each answer in Graph's exact shape from ``shared.catalog``:

* ``POST /v1.0/users/{upn}/sendMail`` (and ``/v1.0/me/sendMail``, which app-only tokens cannot use);
* Sent Items: ``GET /v1.0/users/{upn}/mailFolders/sentitems/messages`` (also ``mailFolders('SentItems')``
  and ``/messages``) with ``$filter=internetMessageId eq '...'``, ``$select``, ``$top``;
* large attachments: draft (``POST /users/{upn}/messages``), ``createUploadSession``, ranged ``PUT`` to the
  pre-authenticated upload URL (which refuses an Authorization header, like Outlook), draft ``send``;
* token checks (signature, audience, lifetime, roles), Application Access Policy scope, mailbox
  existence and licence, Send As, request-body checks, Outlook throttling per app + mailbox, Exchange's
  size and recipient limits (``harness.graph_limits``: MaxSendSize and 150 MB mid-upload or at submission,
  recipients per message and per day accepted and then answered with an NDR), and the scenario's faults;
* delegated (user) tokens: ``/me/...`` is the signed-in user's mailbox; the user's own mailbox needs the
  scope (``Mail.Send``, ``Mail.ReadBasic``/``Mail.Read``/``Mail.ReadWrite``), another mailbox the
  ``.Shared`` scope and FullAccess on it (403 ErrorAccessDenied), and a From other than the user Send As
  (403 ErrorSendAsDenied) (microsoft-graph-docs-contrib concepts/outlook-send-mail-from-other-user.md).

Fault operations: ``sendMail``, ``createMessage``, ``addAttachment``, ``createUploadSession``, ``upload``,
``send``, ``listMessages``. A ``reply`` fault answers its catalog entry without delivering unless the rule
has ``params.delivered = "true"`` (a 504 after the mail went out); ``drop_after_body`` delivers unless
``params.delivered = "false"``. Either way the client cannot tell, which is the point.

After such an ambiguous fault on a sending request (``sendMail``, ``send``; a ``reply`` with a 5xx entry, or
``drop_after_body``) the backend may still be at work, as after a real 504: the request's concurrency slot
stays held ``exchange.ambiguous_hold_s`` (fault param ``hold_s``) and the delivery, when there is one,
happens ``exchange.ambiguous_delivery_delay_s`` later (``deliver_after_s``); meanwhile the message is in
Drafts (``GET .../mailFolders/drafts/messages``), then Sent Items (``exchange.sent_items_delay_s`` after the
delivery). A draft that is being sent is sent once: another ``/send`` of it answers 202 and sends nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import email.parser
import email.policy
import email.utils
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness import graph_metadata, replies
from harness import graph_validate as gv
from harness.faults import ConnectionDropped, Fault, drop_http_connection
from harness.graph_errors import error_response
from harness.graph_limits import RecipientBudget, message_size
from harness.runtime import FAKE_EXCHANGE_HOST, HarnessRuntime
from harness.scenario import Scenario
from harness.server import Endpoint
from harness.state import Delivery, SavedItem
from harness.throttle import GraphThrottle
from harness.tokens import Claims, TokenRejected, unverified_claims
from shared.catalog import entry as catalog_entry

SERVICE = "graph"
READ_ROLES = ("Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All")
WRITE_ROLES = ("Mail.ReadWrite",)
SEND_ROLES = ("Mail.Send",)
SHARED_SEND_SCOPE = "Mail.Send.Shared"
ME = "me"  # the mailbox of a /me/... request: the signed-in user's, known once the token is read
# Below this Graph refuses an upload session (ErrorAttachmentSizeShouldNotBeLessThanMinimumSize).
UPLOAD_SESSION_MIN_BYTES = 3 * 1024 * 1024
UPLOAD_SESSION_LIFETIME_S = 6 * 3600
# aiohttp's own cap on a body: far above Graph's 4 MB so that the fake answers Graph's 413 itself.
CLIENT_MAX_SIZE = 256 * 1024 * 1024
TOKEN_CACHE_SIZE = 4096
SENT_ITEMS_NAMES = {"sentitems", "sent items"}
DRAFTS_NAMES = {"drafts"}
# PidTagMessageFlags and its MSGFLAG_UNSENT bit: an item created with the bit clear is not a draft (and the
# flags cannot be changed once it is saved: PidTagMessageFlags canonical property, MS-OXCMSG 2.2.1.6).
MESSAGE_FLAGS_TAG = "0x0e07"
MSGFLAG_UNSENT = 0x8
SUBMIT_TIME_TAG = "0x0039"  # PidTagClientSubmitTime: the sentDateTime Graph shows
# The requests that send mail: the only ones whose ambiguous failure leaves a backend at work.
SENDING_OPERATIONS = frozenset({"sendMail", "send"})
_FOLDER_SEGMENT = re.compile(r"^mailFolders\('([^']+)'\)$", re.IGNORECASE)
_UPLOAD_PATH = re.compile(
    r"^Users\('(?P<user>[^']*)'\)/Messages\('(?P<message>[^']*)'\)/AttachmentSessions\('(?P<session>[^']*)'\)$"
)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_FILTER_EQ = re.compile(r"^\s*([A-Za-z]+)\s+eq\s+'((?:[^']|'')*)'\s*$")
_ROLE_REJECTIONS = {
    "malformed": "graph.invalid_token",
    "bad_signature": "graph.invalid_token",
    "not_yet_valid": "graph.invalid_token",
    "wrong_tenant": "graph.invalid_token",
    "expired": "graph.token_expired",
    "wrong_audience": "graph.invalid_audience",
}


class GraphFailure(Exception):
    """Answer the catalog entry ``name`` (with ``fmt`` placeholders, optional Retry-After)."""

    def __init__(self, name: str, *, fmt: Mapping[str, str] | None = None, retry_after: int | None = None):
        super().__init__(name)
        self.name = name
        self.fmt = dict(fmt or {})
        self.retry_after = retry_after


@dataclass
class _Call:
    request: web.Request
    request_id: str
    client_request_id: str
    operation: str
    claims: Claims | None = None
    mailbox: str = ""
    body: bytes = b""
    hold_s: float = 0.0  # the concurrency slot stays held this long after the answer (a backend at work)
    deliver_after_s: float = 0.0  # the delivery happens this long after the answer (Drafts meanwhile)

    @property
    def app_id(self) -> str:
        return self.claims.app_id if self.claims else ""

    def headers(self) -> dict[str, str]:
        return {"request-id": self.request_id, "client-request-id": self.client_request_id}


@dataclass
class _Attachment:
    name: str
    content: bytes
    content_type: str | None
    is_inline: bool
    content_id: str | None
    via: str
    id: str = field(default_factory=lambda: _outlook_id())

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": len(self.content),
            "sha256": hashlib.sha256(self.content).hexdigest(),
            "contentType": self.content_type,
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "via": self.via,
        }


@dataclass
class _Draft:
    id: str
    mailbox: str
    app_id: str
    message: dict[str, Any]
    internet_message_id: str
    created: dt.datetime
    attachments: list[_Attachment] = field(default_factory=list)
    submitted: bool = False  # sent, not yet delivered (a late delivery after an ambiguous fault)


@dataclass
class _UploadSession:
    id: str
    secret: str
    draft_id: str
    mailbox: str
    app_id: str
    name: str
    size: int
    content_type: str | None
    is_inline: bool
    content_id: str | None
    expires: dt.datetime
    received: bytearray = field(default_factory=bytearray)


def _outlook_id() -> str:
    """An opaque id shaped like Exchange's (base64 of an entry id)."""
    return "AAMkAG" + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode().rstrip("=") + "="


def _new_internet_message_id() -> str:
    return f"<{secrets.token_hex(16).upper()}@{FAKE_EXCHANGE_HOST}>"


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _param(fault: Fault, name: str, default: bool) -> bool:
    value = fault.params.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


_BEHAVIOUR_PARAMS = frozenset({"delivered", "hold_s", "deliver_after_s"})


def _fault_fmt(fault: Fault) -> dict[str, str]:
    return {k: v for k, v in fault.params.items() if k not in _BEHAVIOUR_PARAMS}


def _seconds_param(fault: Fault, name: str, default: float) -> float:
    value = fault.params.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return max(0.0, seconds)


class GraphFake:
    """State and handlers of one fake Graph. Handlers run on the host's loop thread only."""

    def __init__(self, runtime: HarnessRuntime) -> None:
        self.runtime = runtime
        self._throttle = GraphThrottle(runtime.scenario.limits.graph)
        self._recipients = self._new_recipient_budget()
        self._tokens: dict[tuple[str, str], Claims] = {}
        self.drafts: dict[str, _Draft] = {}
        self.sessions: dict[str, _UploadSession] = {}
        self._late: dict[str, asyncio.TimerHandle] = {}  # draft id -> its scheduled late delivery
        runtime.on_scenario_change(self._scenario_changed)
        runtime.on_reset(self.reset)

    def reset(self) -> None:
        """Between tests: fresh limiter windows, no drafts, no upload sessions, no cached tokens."""
        self._throttle = GraphThrottle(self.runtime.scenario.limits.graph)
        self._recipients = self._new_recipient_budget()
        self._tokens = {}
        for handle in self._late.values():
            handle.cancel()
        self._late.clear()
        self.drafts.clear()
        self.sessions.clear()

    # -- scenario -------------------------------------------------------------------------------------
    @property
    def scenario(self) -> Scenario:
        return self.runtime.scenario

    def _scenario_changed(self, scenario: Scenario) -> None:
        if scenario.limits.graph != self._throttle.limits:
            # Requests in flight keep (and release) the limiter they entered.
            self._throttle = GraphThrottle(scenario.limits.graph)
        limits = scenario.limits.graph
        if (limits.recipients_per_day, limits.recipients_window_s) != (
            self._recipients.limit, self._recipients.window_s
        ):
            self._recipients = self._new_recipient_budget()
        self._tokens = {}

    def _new_recipient_budget(self) -> RecipientBudget:
        limits = self.scenario.limits.graph
        return RecipientBudget(limits.recipients_per_day, limits.recipients_window_s)

    @property
    def throttle(self) -> GraphThrottle:
        return self._throttle

    # -- app ------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        r = app.router
        r.add_post("/v1.0/users/{user}/sendMail", self.send_mail)
        r.add_post("/v1.0/me/sendMail", self.send_mail)
        r.add_get("/v1.0/me/messages", self.list_messages)
        r.add_get("/v1.0/me/mailFolders/{folder}/messages", self.list_messages)
        r.add_get("/v1.0/me/{segment:mailFolders\\('[^']+'\\)}/messages", self.list_messages)
        r.add_post("/v1.0/users/{user}/messages", self.create_message)
        r.add_post("/v1.0/users/{user}/mailFolders/{folder}/messages", self.create_in_folder)
        r.add_post("/v1.0/users/{user}/{segment:mailFolders\\('[^']+'\\)}/messages", self.create_in_folder)
        r.add_post("/v1.0/me/mailFolders/{folder}/messages", self.create_in_folder)
        r.add_get("/v1.0/users/{user}/messages", self.list_messages)
        r.add_get("/v1.0/users/{user}/mailFolders/{folder}/messages", self.list_messages)
        r.add_get("/v1.0/users/{user}/{segment:mailFolders\\('[^']+'\\)}/messages", self.list_messages)
        r.add_post("/v1.0/users/{user}/messages/{message}/attachments", self.add_attachment)
        r.add_post(
            "/v1.0/users/{user}/messages/{message}/attachments/createUploadSession", self.create_upload_session
        )
        r.add_post("/v1.0/users/{user}/messages/{message}/send", self.send_draft)
        r.add_delete("/v1.0/users/{user}/messages/{message}", self.delete_message)
        r.add_route("*", "/v1.0/me/{tail:.*}", self.me)
        r.add_put("/api/v2.0/{tail:.+}", self.upload)
        r.add_delete("/api/v2.0/{tail:.+}", self.cancel_upload)
        r.add_route("*", "/{tail:.*}", self.not_found)
        return app

    # -- the common path of every Graph call -------------------------------------------------------------
    def _begin(self, request: web.Request, operation: str) -> _Call:
        request_id = str(uuid.uuid4())
        return _Call(
            request=request,
            request_id=request_id,
            client_request_id=request.headers.get("client-request-id") or request_id,
            operation=operation,
        )

    def _fail(self, call: _Call, failure: GraphFailure) -> web.Response:
        return error_response(
            failure.name,
            request_id=call.request_id,
            client_request_id=call.client_request_id,
            retry_after=failure.retry_after,
            fmt=failure.fmt,
        )

    def _authenticate(self, request: web.Request) -> Claims:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise GraphFailure("graph.token_missing")
        key = (token, self.scenario.tenant_id)
        claims = self._tokens.get(key)
        if claims is None:
            try:
                claims = self.runtime.verify(token, "graph")
            except TokenRejected as rejected:
                raise GraphFailure(_ROLE_REJECTIONS.get(rejected.reason, "graph.invalid_token")) from None
            if len(self._tokens) >= TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[key] = claims
        elif time.time() >= claims.expires_at:
            # Cached only after a full check; the lifetime is re-checked on every use.
            self._tokens.pop(key, None)
            raise GraphFailure("graph.token_expired")
        return claims

    def _authorize(self, call: _Call, user: str, roles: tuple[str, ...]) -> None:
        """Roles, then mailbox existence, access policy scope and licence, as Graph orders them."""
        claims = call.claims
        assert claims is not None
        if not claims.is_app_only:
            self._authorize_delegated(call, user, roles)
            return
        if not any(claims.has_role(role) for role in roles):
            raise GraphFailure("graph.no_mail_send")
        mailbox = self.scenario.mailbox(user)
        if mailbox is None:
            raise GraphFailure("graph.invalid_user", fmt={"user": user})
        if not self.scenario.graph_may_access(claims.app_id, mailbox.address):
            raise GraphFailure("graph.access_policy")
        if not mailbox.licensed:
            raise GraphFailure("graph.mailbox_not_enabled")
        call.mailbox = mailbox.address

    def _authorize_delegated(self, call: _Call, user: str, roles: tuple[str, ...]) -> None:
        """A user token: its own mailbox needs the scope; another needs the .Shared scope and FullAccess."""
        claims = call.claims
        assert claims is not None
        target = user
        person = self.scenario.user_by_object_id(user)
        if person is not None:  # /users/{object id}
            target = person.address
        mailbox = self.scenario.mailbox(target)
        if mailbox is None:
            raise GraphFailure("graph.invalid_user", fmt={"user": user})
        denied = "graph.no_mail_send" if roles == SEND_ROLES else "graph.access_denied"
        if mailbox.address.lower() == claims.upn.lower():
            if not claims.has_scope(*roles):
                raise GraphFailure(denied)
        else:
            shared = tuple(f"{r}.Shared" for r in roles if not r.endswith(".All"))
            if not claims.has_scope(*shared) or not self.scenario.has_full_access(claims.upn, mailbox.address):
                raise GraphFailure("graph.access_denied")
        if not mailbox.licensed:
            raise GraphFailure("graph.mailbox_not_enabled")
        call.mailbox = mailbox.address

    async def _read_body(self, call: _Call) -> bytes:
        limit = self.scenario.limits.graph.max_request_bytes
        declared = call.request.content_length
        if declared is not None and declared > limit:
            raise GraphFailure("graph.request_too_large")
        body = await call.request.read()
        if len(body) > limit:
            raise GraphFailure("graph.request_too_large")
        call.body = body
        return body

    async def _serve(
        self,
        request: web.Request,
        operation: str,
        roles: tuple[str, ...],
        process: Callable[[_Call], Awaitable[web.StreamResponse]],
        *,
        recipients_of: Callable[[_Call], list[str]] | None = None,
    ) -> web.StreamResponse:
        call = self._begin(request, operation)
        try:
            call.claims = self._authenticate(request)
            user = request.match_info.get("user", ME)
            if "user" not in request.match_info:  # /me/...
                if call.claims.is_app_only:
                    raise GraphFailure("graph.me_app_only")
                user = call.claims.upn
            self._authorize(call, user, roles)
            throttle = self._throttle
            rejection = throttle.enter(call.app_id, call.mailbox, request.content_length or 0)
            if rejection is not None:
                raise GraphFailure(rejection.catalog, retry_after=rejection.retry_after)
            try:
                await self._read_body(call)
                recipients = recipients_of(call) if recipients_of else []
                fault = self.runtime.fault(
                    SERVICE, mailbox=call.mailbox, recipients=recipients, operation=operation
                )
                return await self._with_fault(call, fault, process)
            finally:
                if call.hold_s > 0:
                    # The backend keeps working after the answer: the slot frees later.
                    asyncio.get_running_loop().call_later(call.hold_s, throttle.leave, call.app_id, call.mailbox)
                else:
                    throttle.leave(call.app_id, call.mailbox)
        except GraphFailure as failure:
            return self._fail(call, failure)

    async def _with_fault(
        self,
        call: _Call,
        fault: Fault | None,
        process: Callable[[_Call], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if fault is None:
            return await process(call)
        if fault.action == "latency":
            await fault.delay()
            return await process(call)
        if fault.action == "drop":
            drop_http_connection(call.request)
            raise ConnectionDropped
        if fault.action == "drop_after_body":
            self._backend_at_work(call, fault)
            if _param(fault, "delivered", True):
                await self._process_quietly(call, process)
            await fault.delay()
            drop_http_connection(call.request)
            raise ConnectionDropped
        # "reply": the scripted answer; the work behind it happened only if the rule says so.
        assert fault.catalog is not None
        if (catalog_entry(fault.catalog).status or 0) >= 500:
            self._backend_at_work(call, fault)
        if _param(fault, "delivered", False):
            await self._process_quietly(call, process)
        await fault.delay()
        raise GraphFailure(fault.catalog, fmt=_fault_fmt(fault), retry_after=fault.retry_after)

    def _backend_at_work(self, call: _Call, fault: Fault) -> None:
        """An ambiguous answer to a sending request: the backend goes on (slot held, delivery late)."""
        if call.operation not in SENDING_OPERATIONS:
            return
        exchange = self.scenario.exchange
        call.hold_s = _seconds_param(fault, "hold_s", exchange.ambiguous_hold_s)
        call.deliver_after_s = _seconds_param(fault, "deliver_after_s", exchange.ambiguous_delivery_delay_s)

    @staticmethod
    async def _process_quietly(call: _Call, process: Callable[[_Call], Awaitable[web.StreamResponse]]) -> None:
        # A request that would have failed anyway delivered nothing.
        with contextlib.suppress(GraphFailure):
            await process(call)

    @staticmethod
    def _json(call: _Call) -> Any:
        # Graph reads a body as JSON only when it says it is ("Please ensure Content-Type header is set").
        content_type = call.request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().casefold() != "application/json":
            raise GraphFailure("graph.invalid_json")
        if not call.body.strip():
            raise GraphFailure("graph.invalid_json")
        try:
            return json.loads(call.body)
        except (ValueError, UnicodeDecodeError):
            raise GraphFailure("graph.invalid_json") from None

    # -- sendMail -------------------------------------------------------------------------------------
    async def send_mail(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "sendMail", SEND_ROLES, self._send_mail, recipients_of=_body_recipients)

    async def _send_mail(self, call: _Call) -> web.StreamResponse:
        raw = self._json(call)
        if not isinstance(raw, dict):
            raise GraphFailure("graph.invalid_json")
        # Parameters bind whatever their case (Message / message), properties by their exact names.
        params, unbound = graph_metadata.bind_send_mail(raw)
        if unbound is not None:
            raise GraphFailure(unbound.catalog, fmt=unbound.fmt)
        body = {"message": params.get("Message"), "saveToSentItems": params.get("SaveToSentItems")}
        problem = gv.check_send_body(body)
        if problem is not None:
            raise GraphFailure(problem.catalog, fmt=problem.fmt)
        message = body["message"]
        assert isinstance(message, dict)  # check_send_body refused anything else
        self._check_send_as(call, message)
        summaries = gv.summarize_attachments(message)
        self._check_size(call, message, [a.size for a in summaries])
        if self._refused_later(call, message, "sendMail"):
            return web.Response(status=202, headers=call.headers())
        saved = gv.save_to_sent_items(body)
        self._deliver(
            call,
            message,
            draft=self._draft_of_send_mail(call, message) if call.deliver_after_s > 0 else None,
            graph_json=body,
            saved=saved,
            attachments=[
                {
                    "name": a.name, "size": a.size, "sha256": a.sha256, "contentType": a.content_type,
                    "isInline": a.is_inline, "contentId": a.content_id, "via": "inline",
                }
                for a in summaries
            ],
            operation="sendMail",
        )
        return web.Response(status=202, headers=call.headers())

    def _draft_of_send_mail(self, call: _Call, message: Mapping[str, Any]) -> _Draft:
        """Where a sendMail's message waits for a late delivery: Graph saves it in Drafts first."""
        draft = _new_draft(call, message)
        self.drafts[draft.id] = draft
        return draft

    def _check_send_as(self, call: _Call, message: Mapping[str, Any]) -> None:
        claims = call.claims
        assert claims is not None
        if not claims.is_app_only:
            # The signed-in user sends: From (default: the URL's mailbox) is the user, or one it may send as.
            sent_as = gv.from_address(message) or call.mailbox
            if sent_as.lower() == claims.upn.lower():
                return
            if not claims.has_scope(SHARED_SEND_SCOPE):
                raise GraphFailure("graph.access_denied")
            if not self.scenario.may_send_as(claims.upn, sent_as):
                raise GraphFailure("graph.send_as_denied")
            return
        sender = gv.from_address(message)
        if sender and not self.scenario.may_send_as(call.mailbox, sender):
            raise GraphFailure("graph.send_as_denied")

    # -- Exchange's limits (harness.graph_limits) ----------------------------------------------------------
    def _max_message_bytes(self, call: _Call) -> int:
        mailbox = self.scenario.mailbox(call.mailbox)
        ceiling = self.scenario.limits.graph.max_message_bytes
        return min(mailbox.max_send_bytes, ceiling) if mailbox is not None else ceiling

    def _check_size(self, call: _Call, message: Mapping[str, Any], attachment_sizes: list[int]) -> None:
        """At submission: over MaxSendSize (or the 150 MB ceiling) -> 400 ErrorMessageSizeExceeded."""
        if message_size(message, attachment_sizes) > self._max_message_bytes(call):
            raise GraphFailure("graph.submit_message_size_exceeded")

    def _refused_later(self, call: _Call, message: Mapping[str, Any], operation: str) -> bool:
        """Recipient limits: Exchange accepts the submission and answers with an NDR, so the caller answers
        202 and delivers nothing. True when that happened (the NDR is in the request log)."""
        rcpts = gv.recipients(message)
        count = len({a.lower() for a in rcpts["to"] + rcpts["cc"] + rcpts["bcc"]})
        if count > self.scenario.limits.graph.recipients_per_message:
            ndr = "smtp.ndr_too_many_recipients"
        elif not self._recipients.take(call.mailbox, count):
            ndr = "smtp.ndr_daily_recipient_limit"
        else:
            return False
        code, text = replies.smtp_reply(ndr)
        self.runtime.state.record_request(
            SERVICE, "ndr", text.split(" ", 1)[0], mailbox=call.mailbox, app_id=call.app_id,
            detail=f"{operation}: {code} {text}",
        )
        return True

    def _deliver(
        self,
        call: _Call,
        message: Mapping[str, Any],
        *,
        draft: _Draft | None = None,
        graph_json: Mapping[str, Any],
        saved: bool,
        attachments: list[dict[str, Any]],
        operation: str,
        internet_message_id: str | None = None,
        graph_message_id: str | None = None,
    ) -> Delivery:
        rcpts = gv.recipients(message)
        message_id = internet_message_id or message.get("internetMessageId") or _new_internet_message_id()
        claims = call.claims
        delegated = claims is not None and not claims.is_app_only
        delivery = Delivery(
            transport="graph",
            mailbox=call.mailbox,
            app_id=call.app_id,
            auth_type="delegated" if delegated else "app",
            user=claims.upn if claims is not None and delegated else None,
            recipients=tuple(rcpts["to"] + rcpts["cc"] + rcpts["bcc"]),
            subject=str(message.get("subject") or ""),
            sender=gv.from_address(message) or call.mailbox,
            message_id=str(message_id),
            graph_json=graph_json,
            saved_to_sent_items=saved,
            request_id=call.request_id,
            extra={
                **rcpts,
                "operation": operation,
                "attachments": attachments,
                "graphMessageId": graph_message_id or _outlook_id(),
                "clientRequestId": call.client_request_id,
            },
        )
        if draft is None:
            return self.runtime.state.add_delivery(delivery)
        if call.deliver_after_s <= 0:
            self.drafts.pop(draft.id, None)
            return self.runtime.state.add_delivery(delivery)
        # The backend delivers later; until then the message is in Drafts, being sent.
        draft.submitted = True
        self._late[draft.id] = asyncio.get_running_loop().call_later(
            call.deliver_after_s, self._deliver_late, draft.id, delivery
        )
        return delivery

    def _deliver_late(self, draft_id: str, delivery: Delivery) -> None:
        self._late.pop(draft_id, None)
        if self.drafts.pop(draft_id, None) is None:
            return  # reset (or deleted) meanwhile
        self.runtime.state.add_delivery(dataclasses.replace(delivery, time=time.time()))

    async def me(self, request: web.Request) -> web.StreamResponse:
        """/me paths the fake does not serve: app-only tokens get Graph's 400, user tokens 404."""
        call = self._begin(request, "me")
        try:
            call.claims = self._authenticate(request)
            if call.claims.is_app_only:
                raise GraphFailure("graph.me_app_only")
            raise GraphFailure("graph.resource_not_found")
        except GraphFailure as failure:
            return self._fail(call, failure)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "unknown")
        return self._fail(call, GraphFailure("graph.resource_not_found"))

    # -- Sent Items -----------------------------------------------------------------------------------
    async def list_messages(self, request: web.Request) -> web.StreamResponse:
        folder = _folder_of(request)
        if folder is not None and folder in DRAFTS_NAMES:
            return await self._serve(request, "listMessages", READ_ROLES, self._list_drafts)
        if folder is not None and folder not in SENT_ITEMS_NAMES:
            call = self._begin(request, "listMessages")
            return self._fail(call, GraphFailure("graph.resource_not_found"))
        return await self._serve(request, "listMessages", READ_ROLES, self._list_messages)

    async def _list_drafts(self, call: _Call) -> web.StreamResponse:
        drafts = sorted((d for d in self.drafts.values() if d.mailbox.lower() == call.mailbox.lower()),
                        key=lambda d: d.created, reverse=True)
        return self._listing(call, [_draft_resource(d) for d in drafts], "drafts")

    async def _list_messages(self, call: _Call) -> web.StreamResponse:
        return self._listing(call, sent_items_listing(self.runtime, call.mailbox), "sentitems")

    def _listing(self, call: _Call, items: list[dict[str, Any]], folder: str) -> web.StreamResponse:
        query = call.request.query
        try:
            top = int(query.get("$top", "10"))
        except ValueError:
            raise GraphFailure("graph.client_error") from None
        if top < 1:
            raise GraphFailure("graph.client_error")
        flt = query.get("$filter")
        if flt:
            match = _FILTER_EQ.match(flt)
            if match is None:
                raise GraphFailure("graph.client_error")
            prop, value = match.group(1), match.group(2).replace("''", "'")
            known = {k.lower(): k for k in _MESSAGE_PROPERTIES}
            if prop.lower() not in known:
                raise GraphFailure("graph.client_error")
            prop = known[prop.lower()]
            items = [m for m in items if m.get(prop) == value]
        select = query.get("$select")
        if select:
            wanted = {s.strip().lower() for s in select.split(",") if s.strip()}
            items = [{k: v for k, v in m.items() if k == "id" or k.lower() in wanted} for m in items]
        user = call.request.match_info.get("user", call.mailbox)
        payload = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user}')/mailFolders('{folder}')/messages",
            "value": items[:top],
        }
        return web.json_response(payload, headers=call.headers())

    # -- drafts and large attachments ---------------------------------------------------------------------
    async def create_message(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "createMessage", WRITE_ROLES, self._create_message)

    def _new_message_body(self, call: _Call) -> dict[str, Any]:
        """A message resource to create, bound as Graph binds it (recipients may come later)."""
        message = self._json(call)
        if not isinstance(message, dict):
            raise GraphFailure("graph.invalid_json")
        unbound = graph_metadata.check_object(message, "microsoft.graph.message")
        if unbound is not None:
            raise GraphFailure(unbound.catalog, fmt=unbound.fmt)
        problem = gv.check_message(message, need_recipients=False)
        if problem is not None:
            raise GraphFailure(problem.catalog, fmt=problem.fmt)
        return message

    async def _create_message(self, call: _Call) -> web.StreamResponse:
        message = self._new_message_body(call)
        draft = _new_draft(call, message)
        for item in message.get("attachments") or []:
            draft.attachments.append(_inline_attachment(item))
        self.drafts[draft.id] = draft
        resource = _draft_resource(draft)
        return web.json_response(resource, status=201, headers=call.headers())

    async def create_in_folder(self, request: web.Request) -> web.StreamResponse:
        """``POST .../mailFolders/{folder}/messages``: an item created in a folder, sent to nobody. Drafts
        is the draft path; Sent Items keeps a saved item (outbox's copy of an SMTP submission), which
        Exchange makes a draft unless ``PidTagMessageFlags`` is given without MSGFLAG_UNSENT."""
        folder = _folder_of(request)
        if folder in DRAFTS_NAMES:
            return await self._serve(request, "createMessage", WRITE_ROLES, self._create_message)
        if folder not in SENT_ITEMS_NAMES:
            call = self._begin(request, "createMessage")
            return self._fail(call, GraphFailure("graph.resource_not_found"))
        return await self._serve(request, "createMessage", WRITE_ROLES, self._create_in_sent_items)

    async def _create_in_sent_items(self, call: _Call) -> web.StreamResponse:
        message = self._new_message_body(call)
        flags = _message_flags(message)
        item = self.runtime.state.add_saved_item(SavedItem(
            mailbox=call.mailbox, folder="sentitems",
            message_id=str(message.get("internetMessageId") or _new_internet_message_id()),
            subject=str(message.get("subject") or ""),
            message={k: v for k, v in message.items() if k != "attachments"},
            is_draft=flags is None or bool(flags & MSGFLAG_UNSENT), app_id=call.app_id,
            attachments=len(message.get("attachments") or ()),
        ))
        return web.json_response(_saved_resource(item), status=201, headers=call.headers())

    def _draft(self, call: _Call) -> _Draft:
        draft = self.drafts.get(call.request.match_info["message"])
        if draft is None or draft.mailbox.lower() != call.mailbox.lower():
            raise GraphFailure("graph.item_not_found")
        return draft

    async def add_attachment(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "addAttachment", WRITE_ROLES, self._add_attachment)

    async def _add_attachment(self, call: _Call) -> web.StreamResponse:
        draft = self._draft(call)
        item = self._json(call)
        if not isinstance(item, dict) or gv.decode_content_bytes(item.get("contentBytes")) is None:
            raise GraphFailure("graph.invalid_mime")
        attachment = _inline_attachment(item)
        draft.attachments.append(attachment)
        resource = {
            "@odata.type": gv.FILE_ATTACHMENT,
            "id": attachment.id,
            "name": attachment.name,
            "contentType": attachment.content_type,
            "size": len(attachment.content),
            "isInline": attachment.is_inline,
        }
        return web.json_response(resource, status=201, headers=call.headers())

    async def create_upload_session(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "createUploadSession", WRITE_ROLES, self._create_upload_session)

    async def _create_upload_session(self, call: _Call) -> web.StreamResponse:
        draft = self._draft(call)
        body = self._json(call)
        item = body.get("AttachmentItem") if isinstance(body, dict) else None
        if not isinstance(item, dict) or item.get("attachmentType", "file") != "file":
            raise GraphFailure("graph.client_error")
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise GraphFailure("graph.client_error")
        if size < UPLOAD_SESSION_MIN_BYTES:
            raise GraphFailure("graph.upload_too_small")
        now = dt.datetime.now(dt.UTC)
        session = _UploadSession(
            id=_outlook_id(),
            secret=secrets.token_urlsafe(32),
            draft_id=draft.id,
            mailbox=call.mailbox,
            app_id=call.app_id,
            name=str(item.get("name") or "attachment"),
            size=size,
            content_type=item.get("contentType"),
            is_inline=bool(item.get("isInline", False)),
            content_id=item.get("contentId"),
            expires=now + dt.timedelta(seconds=UPLOAD_SESSION_LIFETIME_S),
        )
        self.sessions[session.id] = session
        origin = str(call.request.url.origin())
        upload_url = (
            f"{origin}/api/v2.0/Users('{call.mailbox}')/Messages('{draft.id}')"
            f"/AttachmentSessions('{session.id}')?authtoken={session.secret}"
        )
        payload = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": upload_url,
            "expirationDateTime": _iso(session.expires),
            "nextExpectedRanges": ["0-"],
        }
        return web.json_response(payload, status=201, headers=call.headers())

    def _session_for(self, call: _Call) -> _UploadSession:
        match = _UPLOAD_PATH.match(call.request.match_info["tail"])
        session = self.sessions.get(match.group("session")) if match else None
        token = call.request.query.get("authtoken", "")
        if (
            session is None
            or match is None
            or match.group("message") != session.draft_id
            or not secrets.compare_digest(token, session.secret)
            or dt.datetime.now(dt.UTC) >= session.expires
        ):
            raise GraphFailure("graph.upload_session_not_found")
        call.mailbox = session.mailbox
        return session

    def _refuse_authorization(self, call: _Call) -> None:
        """Outlook's pre-authenticated URL refuses a bearer token (msgraph-sdk-java#409)."""
        header = call.request.headers.get("Authorization")
        if header is None:
            return
        token = header.partition(" ")[2].strip()
        try:
            audience = unverified_claims(token).audience
        except Exception:
            audience = ""
        raise GraphFailure(
            "graph.upload_authorization", fmt={"audience": audience, "url": str(call.request.url)}
        )

    async def upload(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "upload")
        try:
            self._refuse_authorization(call)
            session = self._session_for(call)
            throttle = self._throttle
            rejection = throttle.enter(session.app_id, session.mailbox, request.content_length or 0)
            if rejection is not None:
                raise GraphFailure(rejection.catalog, retry_after=rejection.retry_after)
            try:
                await self._read_body(call)
                fault = self.runtime.fault(SERVICE, mailbox=session.mailbox, operation="upload")
                return await self._with_fault(call, fault, lambda c: self._upload(c, session))
            finally:
                throttle.leave(session.app_id, session.mailbox)
        except GraphFailure as failure:
            return self._fail(call, failure)

    async def _upload(self, call: _Call, session: _UploadSession) -> web.StreamResponse:
        match = _CONTENT_RANGE.match(call.request.headers.get("Content-Range", ""))
        if match is None:
            raise GraphFailure("graph.upload_range")
        start, end, total = (int(g) for g in match.groups())
        if (
            total != session.size
            or start != len(session.received)
            or end < start
            or end >= total
            or end - start + 1 != len(call.body)
        ):
            raise GraphFailure("graph.upload_range")
        self._check_upload_size(call, session)
        session.received += call.body
        if len(session.received) < session.size:
            payload = {
                "@odata.context": "https://outlook.office.com/api/v2.0/$metadata#Users/Messages/AttachmentSessions/$entity",
                "expirationDateTime": _iso(session.expires),
                "nextExpectedRanges": [f"{len(session.received)}-"],
            }
            return web.json_response(payload, status=200, headers=call.headers())
        draft = self.drafts.get(session.draft_id)
        del self.sessions[session.id]
        if draft is None:
            raise GraphFailure("graph.item_not_found")
        attachment = _Attachment(
            name=session.name,
            content=bytes(session.received),
            content_type=session.content_type,
            is_inline=session.is_inline,
            content_id=session.content_id,
            via="uploadSession",
        )
        draft.attachments.append(attachment)
        origin = str(call.request.url.origin())
        location = (
            f"{origin}/api/v2.0/Users('{session.mailbox}')/Messages('{draft.id}')/Attachments('{attachment.id}')"
        )
        return web.Response(status=201, headers={**call.headers(), "Location": location})

    def _check_upload_size(self, call: _Call, session: _UploadSession) -> None:
        """Mid-upload: the PUT that takes the draft past the limit gets 400 ErrorMessageSizeExceeded
        ([obs] microsoft-graph-docs-contrib#2561: refused after 39 MB of a 43 MB file)."""
        draft = self.drafts.get(session.draft_id)
        if draft is None:
            return
        sizes = [len(a.content) for a in draft.attachments] + [len(session.received) + len(call.body)]
        if message_size(draft.message, sizes) > self._max_message_bytes(call):
            raise GraphFailure("graph.message_size_exceeded")

    async def cancel_upload(self, request: web.Request) -> web.StreamResponse:
        call = self._begin(request, "upload")
        try:
            self._refuse_authorization(call)
            session = self._session_for(call)
            del self.sessions[session.id]
            return web.Response(status=204, headers=call.headers())
        except GraphFailure as failure:
            return self._fail(call, failure)

    async def send_draft(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "send", SEND_ROLES, self._send_draft, recipients_of=self._draft_recipients)

    def _draft_recipients(self, call: _Call) -> list[str]:
        draft = self.drafts.get(call.request.match_info["message"])
        if draft is None:
            return []
        rcpts = gv.recipients(draft.message)
        return rcpts["to"] + rcpts["cc"] + rcpts["bcc"]

    async def _send_draft(self, call: _Call) -> web.StreamResponse:
        draft = self._draft(call)
        if draft.submitted:
            # One item, one submission: the backend is already sending it ([unverified]: Microsoft does not
            # document a second /send of an item in transit; Exchange moves the item, it does not copy it).
            return web.Response(status=202, headers=call.headers())
        problem = gv.check_recipients(draft.message)
        if problem is not None:
            raise GraphFailure(problem.catalog, fmt=problem.fmt)
        self._check_send_as(call, draft.message)
        self._check_size(call, draft.message, [len(a.content) for a in draft.attachments])
        if self._refused_later(call, draft.message, "send"):
            del self.drafts[draft.id]
            return web.Response(status=202, headers=call.headers())
        self._deliver(
            call,
            draft.message,
            draft=draft,
            graph_json={"message": draft.message, "saveToSentItems": True},
            saved=True,  # sending a draft always keeps it in Sent Items
            attachments=[a.summary() for a in draft.attachments],
            operation="send",
            internet_message_id=draft.internet_message_id,
            graph_message_id=draft.id,
        )
        return web.Response(status=202, headers=call.headers())

    async def delete_message(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "deleteMessage", WRITE_ROLES, self._delete_message)

    async def _delete_message(self, call: _Call) -> web.StreamResponse:
        """``DELETE /users/{id}/messages/{id}``: 204 (microsoft-graph-docs-contrib api/message-delete.md).
        A draft being sent has left the client's hands: deleting it does not stop the delivery."""
        draft = self._draft(call)
        if not draft.submitted:
            del self.drafts[draft.id]
        return web.Response(status=204, headers=call.headers())


# -- resources ----------------------------------------------------------------------------------------

_MESSAGE_PROPERTIES = (
    "id", "createdDateTime", "sentDateTime", "subject", "internetMessageId", "from", "sender",
    "toRecipients", "ccRecipients", "bccRecipients", "hasAttachments", "isDraft", "parentFolderId",
    "conversationId",
)


def _body_recipients(call: _Call) -> list[str]:
    try:
        body = json.loads(call.body)
        rcpts = gv.recipients(body["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    return rcpts["to"] + rcpts["cc"] + rcpts["bcc"]


def _folder_of(request: web.Request) -> str | None:
    """The folder a ``mailFolders/{folder}`` or ``mailFolders('{folder}')`` path names, lower-cased."""
    folder = request.match_info.get("folder")
    segment = request.match_info.get("segment")
    if segment:
        match = _FOLDER_SEGMENT.match(segment)
        folder = match.group(1) if match else segment
    return folder.lower() if folder is not None else None


def _message_flags(message: Mapping[str, Any]) -> int | None:
    """The ``PidTagMessageFlags`` a created message gives (``Integer 0x0E07``), or None."""
    for prop in message.get("singleValueExtendedProperties") or ():
        if not isinstance(prop, Mapping):
            raise GraphFailure("graph.client_error")
        kind, _, tag = str(prop.get("id") or "").partition(" ")
        if kind.casefold() == "integer" and tag.strip().casefold() == MESSAGE_FLAGS_TAG:
            try:
                return int(str(prop.get("value")), 0)
            except ValueError:
                raise GraphFailure("graph.client_error") from None
    return None


def sent_items_listing(runtime: HarnessRuntime, mailbox: str, *, harness_ids: bool = False) -> list[dict[str, Any]]:
    """A mailbox's Sent Items as Graph lists them, newest first: the copies of what it sent (each visible
    ``exchange.sent_items_delay_s`` after it was sent) and the items clients saved there. ``harness_ids``
    (the control port's view) adds ``deliveryId`` or ``savedItemId``, which Graph has not."""
    delay_s = runtime.scenario.exchange.sent_items_delay_s
    extra: Callable[[str, str], dict[str, str]] = (lambda k, v: {k: v}) if harness_ids else (lambda k, v: {})
    found = [(d.time, {**_message_resource(d), **extra("deliveryId", d.id)})
             for d in runtime.state.sent_items(mailbox, delay_s=delay_s)]
    found += [(i.time, {**_saved_resource(i), **extra("savedItemId", i.id)})
              for i in runtime.state.saved_items(mailbox, folder="sentitems")]
    return [resource for _, resource in sorted(found, key=lambda pair: pair[0], reverse=True)]


def _saved_resource(item: SavedItem) -> dict[str, Any]:
    """A saved item as Graph lists it; its sent time is the submit time the client gave, if any."""
    rcpts = gv.recipients(item.message)
    created = _iso(dt.datetime.fromtimestamp(item.time, dt.UTC))
    sent = _extended(item.message, "systemtime", SUBMIT_TIME_TAG) or created
    return {
        "id": item.id,
        "createdDateTime": created,
        "sentDateTime": None if item.is_draft else sent,
        "subject": item.subject,
        "internetMessageId": item.message_id,
        "from": item.message.get("from") or {"emailAddress": {"address": item.mailbox}},
        "sender": item.message.get("from") or {"emailAddress": {"address": item.mailbox}},
        "toRecipients": _address_entries(rcpts["to"]),
        "ccRecipients": _address_entries(rcpts["cc"]),
        "bccRecipients": _address_entries(rcpts["bcc"]),
        "hasAttachments": item.attachments > 0,
        "isDraft": item.is_draft,
        "parentFolderId": item.folder,
        "conversationId": hashlib.sha1((item.message_id or item.id).encode()).hexdigest(),
    }


def _extended(message: Mapping[str, Any], kind: str, tag: str) -> str | None:
    for prop in message.get("singleValueExtendedProperties") or ():
        if isinstance(prop, Mapping):
            k, _, t = str(prop.get("id") or "").partition(" ")
            if k.casefold() == kind and t.strip().casefold() == tag:
                return str(prop.get("value"))
    return None


def _new_draft(call: _Call, message: Mapping[str, Any]) -> _Draft:
    """The item Exchange keeps for ``message`` in the caller's Drafts (attachments are added apart)."""
    return _Draft(
        id=_outlook_id(),
        mailbox=call.mailbox,
        app_id=call.app_id,
        message={k: v for k, v in message.items() if k != "attachments"},
        internet_message_id=str(message.get("internetMessageId") or _new_internet_message_id()),
        created=dt.datetime.now(dt.UTC),
    )


def _inline_attachment(item: Mapping[str, Any]) -> _Attachment:
    return _Attachment(
        name=str(item.get("name") or ""),
        content=gv.decode_content_bytes(item.get("contentBytes")) or b"",
        content_type=item.get("contentType"),
        is_inline=bool(item.get("isInline", False)),
        content_id=item.get("contentId"),
        via="inline",
    )


def _address_entries(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a, "name": a}} for a in addresses]


def _draft_resource(draft: _Draft) -> dict[str, Any]:
    rcpts = gv.recipients(draft.message)
    created = _iso(draft.created)
    return {
        "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{draft.mailbox}')/messages/$entity",
        "id": draft.id,
        "createdDateTime": created,
        "lastModifiedDateTime": created,
        "subject": draft.message.get("subject", ""),
        "internetMessageId": draft.internet_message_id,
        "isDraft": True,
        "hasAttachments": bool(draft.attachments),
        "from": draft.message.get("from") or {"emailAddress": {"address": draft.mailbox}},
        "toRecipients": _address_entries(rcpts["to"]),
        "ccRecipients": _address_entries(rcpts["cc"]),
        "bccRecipients": _address_entries(rcpts["bcc"]),
        "parentFolderId": "drafts",
    }


def _message_resource(delivery: Delivery) -> dict[str, Any]:
    """A Sent Items message as Graph lists it (no body: enough for Mail.ReadBasic)."""
    sent = _iso(dt.datetime.fromtimestamp(delivery.time, dt.UTC))
    sender = {"emailAddress": {"address": delivery.sender or delivery.mailbox}}
    extra = delivery.extra or {}
    to, cc, bcc = extra.get("to"), extra.get("cc"), extra.get("bcc")
    if delivery.transport == "smtp" and delivery.raw_mime is not None:
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(delivery.raw_mime)
        to = [a for _, a in email.utils.getaddresses(headers.get_all("To", []))]
        cc = [a for _, a in email.utils.getaddresses(headers.get_all("Cc", []))]
        bcc = []
    attachments = extra.get("attachments") or []
    return {
        "id": str(extra.get("graphMessageId") or delivery.id),
        "createdDateTime": sent,
        "sentDateTime": sent,
        "subject": delivery.subject,
        "internetMessageId": delivery.message_id,
        "from": sender,
        "sender": sender,
        "toRecipients": _address_entries(list(to if to is not None else delivery.recipients)),
        "ccRecipients": _address_entries(list(cc or [])),
        "bccRecipients": _address_entries(list(bcc or [])),
        "hasAttachments": bool(attachments),
        "isDraft": False,
        "parentFolderId": "sentitems",
        "conversationId": hashlib.sha1((delivery.message_id or delivery.id).encode()).hexdigest(),
    }


# -- registration ---------------------------------------------------------------------------------------


def register(runtime: HarnessRuntime) -> Endpoint:
    """Serve the fake Graph on the runtime's service host (service name "graph")."""
    fake = GraphFake(runtime)
    return runtime.host.add_app(SERVICE, fake.app())
