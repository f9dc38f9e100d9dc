"""Microsoft Graph ``sendMail`` over one keep-alive ``httpx.Client`` per process.

Small messages: ``POST {graph}/v1.0/users/{from}/sendMail`` with the rendered JSON, 202 = accepted.
Large messages (an attachment of ``OUTBOX_LARGE_ATTACHMENT_BYTES`` or more, or a request that would
pass Graph's 4 MB limit): a draft (``POST /users/{from}/messages``), one upload session per large
attachment (byte ranges of ``OUTBOX_UPLOAD_CHUNK_BYTES`` streamed from the blob, never the whole
file in memory; no Authorization header on the pre-authorised upload URL), then
``POST /users/{from}/messages/{id}/send``. A delegated mailbox (``shared.credentials``) uses ``/me`` for
the signed-in user's own mailbox and its user's token; the paths are otherwise the same.

Never retried here: 429, 5xx, timeouts. The pipeline re-queues with Retry-After or backoff, and a
429 pauses the mailbox in :mod:`shared.pacing` so the next messages for it wait instead of adding
to the throttling. The one retry inside an invocation is a 401 for an expired or rejected token:
the cached token is dropped and a fresh one is used, once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from shared import classify
from shared.errors import OutboxError
from shared.sent_copy import TOO_LARGE as SENT_COPY_TOO_LARGE
from shared.transports.base import BlobSource, InDrafts, SendResult, load_blobs, pause_mailbox, require_blobs

if TYPE_CHECKING:
    from shared.credentials import Credentials
    from shared.message import Attachment, Message
    from shared.pacing import Pacing
    from shared.render_graph import GraphSendPlan
    from shared.settings import Settings

log = logging.getLogger(__name__)

# Graph refuses sendMail requests over 4 MB (413). The margin covers JSON punctuation we do not
# count exactly and headers.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
REQUEST_MARGIN_BYTES = 64 * 1024

LARGE_PATH_REFUSED = "outbox.large_message_saves_copy"
MESSAGE_TOO_LARGE = "outbox.message_too_large"


def _b64_len(n: int) -> int:
    return 4 * math.ceil(n / 3)



def _result(mailbox: str, imid: str, response: httpx.Response, client_request_id: str, started: float,
            path: str) -> SendResult:
    """What the request that sent the message answered (``path``: how it was sent)."""
    return SendResult(
        transport="graph",
        mailbox=mailbox,
        internet_message_id=imid,
        request_id=response.headers.get("request-id"),
        client_request_id=client_request_id,
        duration_ms=(time.perf_counter() - started) * 1000,
        path=path,
    )

class GraphTransport:
    name = "graph"

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        pacing: Pacing,
        client: httpx.Client,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._pacing = pacing
        self._client = client
        self._base = f"{settings.graph_url.rstrip('/')}/v1.0"

    # -- Transport API --------------------------------------------------------------------------

    def send(self, message: Message, *, internet_message_id: str, blobs: BlobSource | None) -> SendResult:
        from shared import render_graph

        started = time.perf_counter()
        mailbox = message.sender.address
        if self._fits_send_mail(message):  # the common case: no planning, no blob reads
            self._refuse_oversize(message)
            content = self._render_send_mail(message, internet_message_id)
            if len(content) <= MAX_REQUEST_BYTES:
                return self._send_small(content, mailbox, internet_message_id, started)
        sized = self._with_sizes(message, blobs)
        self._refuse_oversize(sized)
        plan = render_graph.plan_send(
            sized,
            # Graph refuses upload sessions under 3 MB: a lower setting cannot move attachments there.
            large_attachment_bytes=max(self._settings.large_attachment_bytes, render_graph.LARGE_ATTACHMENT_BYTES),
            max_request_bytes=MAX_REQUEST_BYTES,
        )
        if not plan.use_draft:
            content = self._render_send_mail(load_blobs(sized, blobs), internet_message_id)
            if len(content) > MAX_REQUEST_BYTES:  # the plan is an upper bound: not expected
                raise OutboxError(
                    "size",
                    "outbox.request_too_large",
                    transport="graph",
                    detail=f"the sendMail request is {len(content)} bytes (Graph accepts 4 MB)",
                    hint="shrink the body; attachments over the limit go through upload sessions",
                )
            return self._send_small(content, mailbox, internet_message_id, started)
        if message.save_to_sent_items is False:
            names = ", ".join(message.attachments[i].name for i in plan.session_attachments + plan.posted_attachments)
            raise OutboxError(
                "invalid_message",
                LARGE_PATH_REFUSED,
                transport="graph",
                detail=(
                    "saveToSentItems is false, but the message is over Graph's 4 MB sendMail limit "
                    f"(attachments sent separately: {names}); that path (draft + upload session + send) "
                    "always saves a copy in Sent Items"
                ),
                hint=(
                    "drop saveToSentItems:false for large messages, send them with \"transport\": \"smtp\", "
                    "or keep attachments under OUTBOX_LARGE_ATTACHMENT_BYTES"
                ),
            )
        return self._send_large(sized, mailbox, internet_message_id, plan, blobs, started)

    def find_sent(self, message: Message, *, internet_message_id: str) -> bool | InDrafts | None:
        """Sent Items first; on a miss, Drafts, where the message is while it has not been sent: Graph's
        202 comes once it is saved there and the move to Sent Items follows transport (microsoft-graph-docs-
        contrib concepts/outlook-things-to-know-about-send-mail.md), and a large message's own draft stays
        there when its ``/send`` never took effect."""
        if message.save_to_sent_items is False:
            return None
        mailbox = message.sender.address
        sent = self._look_in(mailbox, "sentitems", internet_message_id)
        if sent is None or sent:
            return None if sent is None else True
        drafts = self._look_in(mailbox, "drafts", internet_message_id)
        if not drafts:
            return False  # a Drafts lookup that cannot be made leaves the Sent Items miss as it was
        # Newest first: a draft left by an earlier failed attempt whose delete failed is older.
        newest = max(drafts, key=lambda item: str(item.get("createdDateTime") or ""))
        return InDrafts(draft_id=str(newest.get("id") or ""), ours=not self._fits_send_mail(message))

    def _look_in(self, mailbox: str, folder: str, imid: str) -> list[dict[str, Any]] | None:
        """The items of ``folder`` with this internetMessageId; None when the folder cannot be read."""
        quoted = imid.replace("'", "''")
        params = {"$filter": f"internetMessageId eq '{quoted}'", "$select": "id,createdDateTime", "$top": "10"}
        url = f"{self._user_url(mailbox)}/mailFolders/{folder}/messages"
        with self._slot(mailbox):
            try:
                response, _ = self._request("GET", url, mailbox=mailbox, operation="lookup", params=params)
            except OutboxError as exc:
                if exc.status in (403, 404):
                    # No Mail.ReadBasic, or a policy that hides the folder: the caller cannot know.
                    log.info("%s lookup not possible for %s: %s", folder, mailbox, exc.code)
                    return None
                raise
        try:
            found = response.json().get("value") or []
        except (ValueError, AttributeError):
            return None
        return [item for item in found if isinstance(item, dict) and item.get("id")]

    def in_sent_items(self, message: Message, *, internet_message_id: str) -> bool | None:
        """Whether the sender's Sent Items hold this Message-ID (an SMTP submission's copy, or outbox's);
        None when the app may not read them."""
        return self.find_by_message_id(message.sender.address, internet_message_id)

    def find_by_message_id(self, mailbox: str, internet_message_id: str) -> bool | None:
        found = self._look_in(mailbox, "sentitems", internet_message_id)
        return None if found is None else bool(found)

    def save_sent_copy(self, message: Message, *, internet_message_id: str, sent_at: datetime,
                       blobs: BlobSource | None) -> str | None:
        """Save a sent item for an SMTP submission in the sender's Sent Items (needs Mail.ReadWrite); the
        Graph request id. Nothing is delivered: creating an item in a folder sends nothing. A copy over
        Graph's 4 MB request limit raises ``outbox.sent_copy_too_large`` (not retryable)."""
        from shared import render_graph

        mailbox = message.sender.address
        loaded = load_blobs(message, blobs)
        content = render_graph.to_json_bytes(
            render_graph.render_sent_copy(loaded, internet_message_id=internet_message_id, sent_at=sent_at))
        if len(content) > MAX_REQUEST_BYTES:
            raise OutboxError(
                "size", SENT_COPY_TOO_LARGE, transport="graph",
                detail=f"the Sent Items copy would be a {len(content)}-byte request (Graph accepts 4 MB in one)",
                hint="nothing to do for this message (it was sent); large messages that need a Sent Items "
                "copy are better sent through Graph, which keeps one itself",
            )
        url = f"{self._user_url(mailbox)}/mailFolders/sentitems/messages"
        with self._slot(mailbox):
            response, _ = self._request("POST", url, mailbox=mailbox, operation="save_sent_copy", content=content)
        return response.headers.get("request-id")

    def send_draft(self, message: Message, *, internet_message_id: str, draft_id: str) -> SendResult:
        """Send the draft a lookup found instead of a new copy: one item in the mailbox, so if the earlier
        ``/send`` is in fact still at work Exchange has that one item to move, not two messages; and the
        attachments (up to 150 MB) are not uploaded again."""
        started = time.perf_counter()
        mailbox = message.sender.address
        url = f"{self._user_url(mailbox)}/messages/{quote(draft_id, safe='')}/send"
        with self._slot(mailbox, holder=internet_message_id):
            try:
                response, client_request_id = self._request(
                    "POST", url, mailbox=mailbox, operation="send_draft", delivers=True, content=b""
                )
            except OutboxError as exc:
                if exc.status != 404:
                    raise
                # Gone since the lookup: sent meanwhile (moved to Sent Items) or deleted. Look again later.
                raise OutboxError(
                    "transient", "outbox.draft_gone", transport="graph", status=404, retryable=True,
                    request_sent=True, maybe_delivered=True,
                    detail="the draft found in Drafts was gone when it was sent again (sent meanwhile?)",
                    hint="nothing to do: outbox looks for the message again before it sends a new copy",
                ) from exc
        return _result(mailbox, internet_message_id, response, client_request_id, started, "draft")

    def close(self) -> None:
        """The HTTP client belongs to ``Senders``."""

    # -- small path ----------------------------------------------------------------------------

    @staticmethod
    def _render_send_mail(message: Message, imid: str) -> bytes:
        from shared import render_graph

        return render_graph.to_json_bytes(render_graph.render_send_mail(message, internet_message_id=imid))

    def _send_small(self, content: bytes, mailbox: str, imid: str, started: float) -> SendResult:
        with self._slot(mailbox, holder=imid):
            response, client_request_id = self._request(
                "POST", f"{self._user_url(mailbox)}/sendMail", mailbox=mailbox, operation="send",
                content=content, delivers=True,
            )
        return _result(mailbox, imid, response, client_request_id, started, "sendMail")

    def _refuse_oversize(self, message: Message) -> None:
        """A message Exchange will refuse for its size is poisoned before any request: for a large one,
        Exchange would only say so in the middle of its upload (400 ErrorMessageSizeExceeded)."""
        from shared import render_graph

        refusal = render_graph.size_refusal(message, max_send_bytes=self._settings.max_send_bytes)
        if refusal is None:
            return
        raise OutboxError(
            "size",
            MESSAGE_TOO_LARGE,
            transport="graph",
            detail=refusal.detail(),
            hint=(
                "shrink the attachments (or send a link instead); if this mailbox's MaxSendSize is larger "
                "(Get-Mailbox <mailbox> | fl MaxSendSize; Set-Mailbox -MaxSendSize up to 150 MB), set "
                "OUTBOX_MAX_SEND_BYTES to it, or to 0 when it differs between mailboxes"
            ),
        )

    # -- large path ----------------------------------------------------------------------------

    def _fits_send_mail(self, message: Message) -> bool:
        """True when no attachment is (or may be) large and the request is probably under 4 MB
        (the rendered size is checked afterwards; non-ASCII bodies can exceed the estimate)."""
        total = 2 * (len(message.text or "") + len(message.html or "")) + REQUEST_MARGIN_BYTES
        for att in message.attachments:
            if att.content is None:
                return False  # a blob: its size decides
            if len(att.content) >= self._settings.large_attachment_bytes:
                return False
            total += _b64_len(len(att.content)) + 512
        return total <= MAX_REQUEST_BYTES

    def _with_sizes(self, message: Message, blobs: BlobSource | None) -> Message:
        """Attachment sizes known (a blob's from its properties), without loading any blob."""
        if all(a.size is not None for a in message.attachments):
            return message
        sized = tuple(
            a if a.size is not None else replace(a, size=require_blobs(blobs, a).size(a.blob or ""))
            for a in message.attachments
        )
        return replace(message, attachments=sized)

    def _send_large(
        self,
        message: Message,
        mailbox: str,
        imid: str,
        plan: GraphSendPlan,
        blobs: BlobSource | None,
        started: float,
    ) -> SendResult:
        from shared import render_graph

        sessions = plan.session_attachments
        # Everything but the upload-session attachments travels as JSON: load those blobs only.
        loaded = load_blobs(message, blobs, skip=frozenset(sessions))
        draft = render_graph.to_json_bytes(
            render_graph.render_draft_message(
                loaded, internet_message_id=imid, exclude_attachments=plan.excluded_from_draft
            )
        )
        user = self._user_url(mailbox)
        # Draft + posted attachments + upload sessions + send run one after another: one slot, and
        # every request paid from the budget up front so the sequence is never cut off halfway.
        cost = 2 + len(plan.posted_attachments) + len(sessions)
        with self._slot(mailbox, cost=cost, holder=imid):
            response, _ = self._request(
                "POST", f"{user}/messages", mailbox=mailbox, operation="create_draft", content=draft
            )
            draft_id = _json(response).get("id")
            if not draft_id:
                raise OutboxError(
                    "transient", "outbox.draft_without_id", transport="graph", status=response.status_code,
                    retryable=True, request_sent=True, detail="Graph created a draft but returned no id",
                )
            message_url = f"{user}/messages/{quote(draft_id, safe='')}"
            try:
                for i in plan.posted_attachments:
                    body = render_graph.to_json_bytes(render_graph.file_attachment(loaded.attachments[i], index=i))
                    self._request(
                        "POST", f"{message_url}/attachments", mailbox=mailbox, operation="add_attachment",
                        content=body,
                    )
                for i in sessions:
                    self._upload(message_url, mailbox, message.attachments[i], blobs)
            except BaseException:
                self._discard_draft(message_url, mailbox)
                raise
            try:
                response, client_request_id = self._request(
                    "POST", f"{message_url}/send", mailbox=mailbox, operation="send_draft", delivers=True,
                    content=b"",
                )
            except OutboxError as exc:
                if not exc.maybe_delivered:
                    self._discard_draft(message_url, mailbox)
                raise
        return _result(mailbox, imid, response, client_request_id, started, "uploadSession")

    def _upload(self, message_url: str, mailbox: str, att: Attachment, blobs: BlobSource | None) -> None:
        from shared import render_graph

        size = att.size or 0
        response, _ = self._request(
            "POST",
            f"{message_url}/attachments/createUploadSession",
            mailbox=mailbox,
            operation="create_upload_session",
            content=render_graph.to_json_bytes(render_graph.upload_session_body(att)),
        )
        upload_url = _json(response).get("uploadUrl")
        if not upload_url:
            raise OutboxError(
                "transient", "outbox.upload_session_without_url", transport="graph", retryable=True,
                request_sent=True, status=response.status_code, detail="createUploadSession returned no uploadUrl",
            )
        chunk = self._settings.upload_chunk_bytes
        for offset in range(0, size, chunk):
            length = min(chunk, size - offset)
            headers = {
                "Content-Range": f"bytes {offset}-{offset + length - 1}/{size}",
                "Content-Length": str(length),
                "Content-Type": "application/octet-stream",
            }
            if att.content is not None:
                piece: bytes | Iterator[bytes] = att.content[offset : offset + length]
            else:
                # Streamed from the blob into the request: no copy of the range stays behind, where a
                # bytes body would live on in httpx's request until the garbage collector found it.
                source = require_blobs(blobs, att).read_range(att.blob or "", offset, length)
                piece = _exactly(source, length, att, size)
            # The upload URL carries its own authorisation: a bearer token there is refused.
            self._request(
                "PUT", upload_url, mailbox=mailbox, operation="upload", content=piece,
                headers=headers, authorize=False,
            )

    def _discard_draft(self, message_url: str, mailbox: str) -> None:
        """Best effort: a failed large send should not leave a draft behind in the mailbox."""
        try:
            self._request("DELETE", message_url, mailbox=mailbox, operation="delete_draft")
        except OutboxError as exc:
            log.warning("could not delete the draft of a failed send (%s): %s", mailbox, exc)

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self, mailbox: str, *, cost: int = 1, holder: str | None = None) -> Iterator[None]:
        """One of the mailbox's in-flight slots (``Pacing.slot``), with the token fetched before it is taken.

        A slot is shared by every instance (OUTBOX_SLOTS=blob): held while Key Vault and Entra answer an
        instance's first token request (0.3-0.4 s on a busy host), it is a request Outlook is not counting
        and one other instances wait for. Cached, the early token costs a dictionary lookup."""
        self._credentials.for_mailbox(mailbox).token("graph")
        with self._pacing.graph.slot(mailbox, cost=cost, holder=holder):
            yield

    def _user_url(self, mailbox: str) -> str:
        return f"{self._base}/{self._credentials.for_mailbox(mailbox).graph_path}"

    def _request(
        self,
        method: str,
        url: str,
        *,
        mailbox: str,
        operation: str,
        content: bytes | Iterator[bytes] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authorize: bool = True,
        delivers: bool = False,
    ) -> tuple[httpx.Response, str]:
        """One Graph request; 2xx returns, anything else raises classified.

        ``delivers`` marks the request that sends mail: only its ambiguous failures may have
        delivered anything (a lost draft or upload request cannot send a message).
        """
        for attempt in (1, 2):
            client_request_id = str(uuid.uuid4())
            request_headers = {"client-request-id": client_request_id, "return-client-request-id": "true"}
            token = None
            credential = self._credentials.for_mailbox(mailbox)
            if authorize:
                token = credential.token("graph").token
                request_headers["Authorization"] = f"Bearer {token}"
            if content is not None and "Content-Type" not in (headers or {}):
                request_headers["Content-Type"] = "application/json"
            if headers:
                request_headers.update(headers)
            try:
                response = self._client.request(method, url, content=content, params=params, headers=request_headers)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, client_request_id, delivers) from exc
            if response.status_code < 300:
                return response, client_request_id
            err = classify.classify_graph_response(
                response.status_code, response.content, response.headers, operation=operation
            )
            err = err.replace(
                client_request_id=err.client_request_id or client_request_id,
                request_id=err.request_id or response.headers.get("request-id"),
                request_sent=True,
            )
            if not delivers and err.maybe_delivered:
                err = err.replace(maybe_delivered=False)
            if attempt == 1 and token is not None and response.status_code == 401 and err.refresh_credentials:
                log.info("Graph refused the token (%s); retrying once with a fresh one", err.code)
                credential.invalidate("graph", token)
                continue
            if response.status_code == 429 or err.category == "throttled":
                pause_mailbox(self._pacing.graph, mailbox, err, self._settings)
            raise err
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _transport_error(exc: httpx.HTTPError, client_request_id: str, delivers: bool) -> OutboxError:
        not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        err = classify.classify_transport_exception(exc, transport="graph", request_sent=not not_sent)
        # A request whose body did not finish going out cannot have been acted on.
        incomplete = isinstance(exc, httpx.WriteError | httpx.WriteTimeout)
        return err.replace(
            client_request_id=client_request_id,
            maybe_delivered=bool(err.maybe_delivered and delivers and not incomplete),
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _exactly(pieces: Iterable[bytes], length: int, att: Attachment, size: int) -> Iterator[bytes]:
    """``pieces`` as they come, checked to add up to ``length`` (the blob changed under us otherwise)."""
    seen = 0
    for piece in pieces:
        seen += len(piece)
        if seen > length:
            raise _size_changed(att, size)
        yield piece
    if seen != length:
        raise _size_changed(att, size)


def _size_changed(att: Attachment, size: int) -> OutboxError:
    return OutboxError(
        "transient",
        "outbox.attachment_size_changed",
        transport="graph",
        retryable=True,
        request_sent=True,
        detail=f"attachment {att.name!r} ({att.blob}) is no longer the {size} bytes announced to the upload session",
        hint="a blob was overwritten while it was being sent; the message is retried",
    )
