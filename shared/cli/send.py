"""``outbox send``: one message, from flags or a JSON file, via the HTTP function, the queue, or now."""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import uuid
from pathlib import Path
from typing import Any

from shared.cli.context import Context
from shared.cli.output import CliError, Exit

EPILOG = """\
examples:
  outbox send --from noreply@contoso.example --to you@fabrikam.example --subject Hello --text "Hi there"
  outbox send --from noreply@contoso.example --to a@x.example,b@x.example --html-file mail.html \\
              --attach report.pdf --subject "Monthly report" --id report-2026-01
  outbox send --file message.json                    a v1 message (plain JSON)
  outbox send --file message.json --now              send at once in this process; print the result
  outbox send --file message.json --via api          POST to the HTTP function (OUTBOX_API_URL, OUTBOX_API_KEY)

Where the message goes (--via): "queue" validates it here and puts it on OUTBOX_QUEUE (a status row
says queued at once); "api" posts it to the HTTP function (POST /api/send?mode=queue); "now" runs the
function's own pipeline in this process and sends at once (needs what the function needs: Key Vault,
the certificate, a token). Default: api when OUTBOX_API_URL is set, else queue.

Attachments (--attach FILE) travel inside the message while it fits a queue message (64 KiB); larger
files are uploaded to OUTBOX_ATTACHMENTS_CONTAINER and referenced ("blob": "container/path").

exit codes: 0 queued or sent; 1 refused (the error and its fix are printed); 2 invalid message or
arguments; 3 not sent yet but will be retried (throttled, transient, or it may have been delivered)."""

# Inline attachments up to this size; the rest go to blob storage (a queue message holds 64 KiB).
INLINE_LIMIT = 40 * 1024


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "send",
        parents=[common],
        help="send one message (flags or a JSON file)",
        description="Send one ad hoc message through the queue, the HTTP function, or at once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--file", type=Path, metavar="FILE", help="a v1 message as JSON (- for stdin)")
    p.add_argument("--from", dest="sender", metavar="ADDR", help="the sending mailbox")
    p.add_argument("--to", action="append", default=[], metavar="ADDR", help="recipient (repeat or comma list)")
    p.add_argument("--cc", action="append", default=[], metavar="ADDR")
    p.add_argument("--bcc", action="append", default=[], metavar="ADDR")
    p.add_argument("--reply-to", action="append", default=[], metavar="ADDR")
    p.add_argument("--subject", default=None)
    p.add_argument("--text", help="plain text body")
    p.add_argument("--text-file", type=Path, metavar="FILE")
    p.add_argument("--html", help="HTML body")
    p.add_argument("--html-file", type=Path, metavar="FILE")
    p.add_argument("--attach", action="append", default=[], type=Path, metavar="FILE", help="attach a file (repeat)")
    p.add_argument("--header", action="append", default=[], metavar="X-NAME=VALUE", help="custom header (repeat)")
    p.add_argument("--importance", choices=("low", "normal", "high"))
    p.add_argument("--transport", choices=("graph", "smtp"), help="default: OUTBOX_TRANSPORT")
    p.add_argument("--id", help="idempotency key (default: a new one)")
    p.add_argument("--no-sent-items", action="store_true", help="Graph: do not save to Sent Items")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--via", choices=("queue", "api", "now"))
    how.add_argument("--now", dest="via", action="store_const", const="now", help="same as --via now")
    how.add_argument("--queue", dest="via", action="store_const", const="queue", help="same as --via queue")
    how.add_argument("--api", dest="via", action="store_const", const="api", help="same as --via api")
    p.set_defaults(func=run)


def _addresses(values: list[str]) -> list[str]:
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def _read(path: Path, ctx: Context, what: str) -> str:
    if str(path) == "-":
        return ctx.out.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {what} {path}: {exc}", Exit.USAGE) from None


def build_message(args: argparse.Namespace, ctx: Context) -> tuple[dict[str, Any], list[Path]]:
    """The v1 body from --file or the flags (attachments are resolved later)."""
    flags = any([args.sender, args.to, args.cc, args.bcc, args.reply_to, args.subject is not None, args.text,
                 args.text_file, args.html, args.html_file, args.header, args.importance])
    if args.file is not None:
        if flags:
            raise CliError("give the message either as --file or as flags, not both", Exit.USAGE)
        try:
            body = json.loads(_read(args.file, ctx, "message file"))
        except json.JSONDecodeError as exc:
            raise CliError(f"{args.file} is not JSON: {exc}", Exit.USAGE) from None
        if not isinstance(body, dict):
            raise CliError(f"{args.file} must hold one JSON object (a v1 message)", Exit.USAGE)
    else:
        if not args.sender:
            raise CliError("--from is required (or give --file)", Exit.USAGE)
        body = {"from": args.sender}
        for key, values in (("to", args.to), ("cc", args.cc), ("bcc", args.bcc), ("replyTo", args.reply_to)):
            if values:
                body[key] = _addresses(values)
        body["subject"] = args.subject or ""
        if args.text is not None or args.text_file is not None:
            body["text"] = args.text if args.text is not None else _read(args.text_file, ctx, "text file")
        if args.html is not None or args.html_file is not None:
            body["html"] = args.html if args.html is not None else _read(args.html_file, ctx, "HTML file")
        if args.header:
            headers = {}
            for item in args.header:
                name, sep, value = item.partition("=")
                if not sep:
                    raise CliError(f"--header {item!r}: write X-Name=value", Exit.USAGE)
                headers[name.strip()] = value
            body["headers"] = headers
        if args.importance:
            body["importance"] = args.importance
    if args.id:
        body["id"] = args.id
    if args.transport:
        body["transport"] = args.transport
    if args.no_sent_items:
        body["saveToSentItems"] = False
    return body, list(args.attach)


def _attachments(body: dict[str, Any], files: list[Path], settings: Any, message_id: str) -> None:
    if not files:
        return
    from shared.storage.queues import encode_body, fits_queue

    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read attachment {path}: {exc}", Exit.USAGE) from None
        found.append((path, data))
    attachments = list(body.get("attachments") or [])
    for path, data in found:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        attachments.append({"name": path.name, "contentType": kind,
                            "contentBase64": base64.b64encode(data).decode("ascii")})
    inline = {**body, "attachments": attachments}
    if fits_queue(encode_body(inline)):
        body["attachments"] = attachments
        return
    # Too big for a queue message: park the larger files in blob storage and reference them.
    from shared.cli.storage import storage_failure, stores

    parts = stores(settings)
    store = parts.queues
    start = len(attachments) - len(found)
    try:
        for offset, (path, data) in enumerate(found):
            if len(data) <= INLINE_LIMIT // 4:
                continue
            try:
                ref = store.store_blob(f"cli/{message_id}/{offset}-{path.name}", data)
            except Exception as exc:
                raise storage_failure(exc, f"uploading {path} to {settings.attachments_container}") from None
            entry = dict(attachments[start + offset])
            entry.pop("contentBase64")
            entry["blob"] = ref
            attachments[start + offset] = entry
    finally:
        parts.close()
    body["attachments"] = attachments


def run(args: argparse.Namespace, ctx: Context) -> int:
    body, files = build_message(args, ctx)
    settings = ctx.settings(require_storage=False)
    via = args.via or ("api" if settings.api_url else "queue")
    if via in ("queue", "now"):
        settings = ctx.settings()
    body.setdefault("id", uuid.uuid4().hex)
    _attachments(body, files, settings, str(body["id"]))
    if via == "api":
        return _via_api(body, settings, ctx)
    return _via_pipeline(body, settings, ctx, now=via == "now")


def _invalid(exc: Any) -> CliError:
    errors = exc.to_list()
    lines = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return CliError(f"invalid message: {lines}", Exit.USAGE, details={"errors": errors})


def _via_pipeline(body: dict[str, Any], settings: Any, ctx: Context, *, now: bool) -> int:
    from shared.acceptance import NotAccepted
    from shared.errors import OutboxError
    from shared.pipeline import IdConflict
    from shared.runtime import build_runtime
    from shared.storage import StorageOptions

    out = ctx.out
    with build_runtime(settings, sending=now, storage=StorageOptions.cli(settings)) as runtime:
        pipe = runtime.pipeline
        if not now:
            try:
                done = pipe.enqueue(body)
            except NotAccepted as exc:
                raise _invalid(exc) from None
            except IdConflict as exc:
                raise CliError(f"not queued: {exc.error.detail}; fix: {exc.error.hint}", Exit.FAILED,
                               details={"error": exc.error.to_dict()}) from None
            except OutboxError as exc:
                raise CliError(f"not queued: {exc}" + (f"; fix: {exc.hint}" if exc.hint else ""), Exit.FAILED,
                               details={"error": exc.to_dict()}) from None
            message_id, state = done.message_id, done.row.state
            out.emit({"id": message_id, "state": state, "via": "queue", "queue": settings.queue,
                      "duplicate": done.duplicate})
            if done.duplicate:
                out.line(f"{message_id} was sent to outbox before with the same content (state {state}); "
                         f"not queued again: outbox status {message_id}")
            else:
                out.line(f"queued {message_id} on {settings.queue} (state {state}); "
                         f"follow it with: outbox status {message_id}")
            return Exit.OK
        outcome = pipe.send_now(body)
    return _report_outcome(outcome, ctx)


def _report_outcome(outcome: Any, ctx: Context) -> int:
    out = ctx.out
    doc: dict[str, Any] = {"id": outcome.message_id, "kind": outcome.kind, "state": outcome.state, "via": "now",
                           "transport": outcome.transport, "mailbox": outcome.mailbox,
                           "requestIds": list(outcome.request_ids), "internetMessageId": outcome.internet_message_id}
    if outcome.error is not None:
        doc["error"] = outcome.error.to_dict()
    if outcome.invalid:
        doc["errors"] = outcome.invalid
    out.emit(doc)
    if outcome.kind == "sent":
        ids = ", ".join(outcome.request_ids)
        out.line(f"sent {outcome.message_id} via {outcome.transport} from {outcome.mailbox}"
                 + (f" (request ids {ids})" if ids else ""))
        return Exit.OK
    if outcome.kind == "duplicate":
        out.line(f"{outcome.message_id} was already {outcome.state}; nothing sent (outbox status {outcome.message_id})")
        return Exit.OK if outcome.state == "sent" else Exit.FAILED
    if outcome.invalid:
        lines = "; ".join(f"{e['field']}: {e['message']}" for e in outcome.invalid)
        out.error(f"invalid message: {lines}")
        return Exit.USAGE
    err = outcome.error
    if outcome.kind == "in_flight":
        out.error(f"{outcome.message_id} is being sent right now by another copy; try `outbox status {outcome.message_id}`")
        return Exit.PARTIAL
    text = str(err) if err is not None else outcome.kind
    if outcome.ambiguous:
        out.error(f"{outcome.message_id} may have been delivered ({text}); do not resend blindly: "
                  f"outbox status {outcome.message_id}")
        return Exit.PARTIAL
    if outcome.kind == "retry":
        out.error(f"{outcome.message_id} not sent yet: {text}; it will be tried again later")
        return Exit.PARTIAL
    out.error(f"{outcome.message_id} refused: {text}")
    if err is not None and err.hint:
        out.error(f"fix: {err.hint}")
    return Exit.FAILED


def _via_api(body: dict[str, Any], settings: Any, ctx: Context) -> int:
    import httpx

    if not settings.api_url:
        raise CliError("OUTBOX_API_URL is not set (the HTTP function's base URL)", Exit.USAGE)
    base = settings.api_url.rstrip("/")
    url = f"{base}/send" if base.endswith("/api") else f"{base}/api/send"
    headers = {"Content-Type": "application/json"}
    if settings.api_key:
        headers["x-functions-key"] = settings.api_key
    try:
        with httpx.Client(verify=settings.ssl_context(), timeout=settings.http_timeout_s) as client:
            response = client.post(url, params={"mode": "queue"}, headers=headers,
                                   content=json.dumps(body, ensure_ascii=False).encode("utf-8"))
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the HTTP function at {url}: {exc}", Exit.FAILED) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"raw": response.text[:500]}
    out = ctx.out
    out.emit({"httpStatus": response.status_code, "via": "api", **(answer if isinstance(answer, dict) else {})})
    if response.status_code in (200, 202):
        out.line(f"{answer.get('state', 'queued')} {answer.get('id')} (HTTP {response.status_code}); "
                 f"follow it with: outbox status {answer.get('id')}")
        return Exit.OK
    error = answer.get("error") if isinstance(answer, dict) else None
    detail = error.get("detail") if isinstance(error, dict) else response.text[:300]
    out.error(f"the HTTP function answered {response.status_code}: {detail}")
    if isinstance(error, dict) and error.get("hint"):
        out.error(f"fix: {error['hint']}")
    if response.status_code == 400:
        return Exit.USAGE
    if response.status_code in (401, 403):
        out.error("check OUTBOX_API_KEY (the function key)")
    return Exit.FAILED
