"""``outbox poison list|show|requeue|purge``: triage of ``<queue>-poison``."""

from __future__ import annotations

import argparse
import contextlib
import json
import textwrap
from collections.abc import Iterator
from typing import Any

from shared.cli.context import Context
from shared.cli.output import CliError, Column, Exit, plural

EPILOG = """\
examples:
  outbox poison list                                   grouped by category and mailbox, with the fix
  outbox poison list --messages                        one line per message too
  outbox poison show invoice-2026-0042                 one envelope in full
  outbox poison requeue --category permission --mailbox sender@contoso.example
  outbox poison requeue invoice-2026-0042 invoice-2026-0043
  outbox poison purge --category invalid_message --yes

Messages that the Functions host itself moved to the poison queue (the function failed
maxDequeueCount times) carry no envelope: they are listed as category "host-moved"."""

REQUEUE_EPILOG = """\
examples:
  outbox poison requeue invoice-2026-0042
  outbox poison requeue --category auth                 after fixing e.g. the Exchange service principal
  outbox poison requeue --mailbox sender@contoso.example --dry-run

Requeue puts the original v1 body back on OUTBOX_QUEUE with its id, resets the status row to queued with
a fresh attempt budget, then deletes the poison copy. A message whose status row says "sent" is never
requeued (so nothing is sent twice), nor is an invalid_message (it would fail again unchanged: send a
corrected message instead). Host-moved messages are requeued exactly as they were.

exit codes: 0 all selected requeued; 3 some skipped or failed; 1 none requeued; 4 no message matched."""

PURGE_EPILOG = """\
examples:
  outbox poison purge invoice-2026-0042
  outbox poison purge --category invalid_message --yes
  outbox poison purge --all --yes

Asks before deleting unless --yes. Status rows are kept (they still say poisoned); an oversized
original parked in the attachment container is deleted with its envelope.

exit codes: 0 purged; 1 declined or failed; 3 some failed; 4 no message matched."""


def _selectors(p: argparse.ArgumentParser, *, allow_all: bool = True) -> None:
    p.add_argument("ids", nargs="*", metavar="ID", help="message ids (or poison queue message ids)")
    p.add_argument("--category", help="e.g. auth, permission, recipient, quota, invalid_message, host-moved")
    p.add_argument("--mailbox", metavar="ADDR", help="the sending mailbox (the message's from)")
    if allow_all:
        p.add_argument("--all", action="store_true", dest="everything", help="every message on the poison queue")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("poison", parents=[common], help="list, show, requeue or purge poison messages",
                       description="Triage the poison queue (<OUTBOX_QUEUE>-poison).", epilog=EPILOG,
                       formatter_class=fmt)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    lp = verbs.add_parser("list", parents=[common], help="grouped by category and mailbox, with the fix",
                          epilog=EPILOG, formatter_class=fmt)
    lp.add_argument("--messages", action="store_true", help="also one line per message")
    lp.add_argument("--category", help="only this category")
    lp.add_argument("--mailbox", metavar="ADDR", help="only this mailbox")
    lp.set_defaults(func=run_list)

    sp = verbs.add_parser("show", parents=[common], help="one envelope in full", epilog=EPILOG,
                          formatter_class=fmt)
    sp.add_argument("id", metavar="ID", help="message id (or poison queue message id)")
    sp.set_defaults(func=run_show)

    rp = verbs.add_parser("requeue", parents=[common], help="put messages back on the queue after the fix",
                          epilog=REQUEUE_EPILOG, formatter_class=fmt)
    _selectors(rp)
    rp.add_argument("--dry-run", action="store_true", help="say what would be requeued; change nothing")
    rp.set_defaults(func=run_requeue)

    pp = verbs.add_parser("purge", parents=[common], help="delete poison messages (asks first)",
                          epilog=PURGE_EPILOG, formatter_class=fmt)
    _selectors(pp)
    pp.add_argument("--yes", "-y", action="store_true", help="do not ask")
    pp.set_defaults(func=run_purge)


# -- plumbing -----------------------------------------------------------------------------------------


def _open(ctx: Context) -> tuple[Any, Any]:
    from shared.cli.poison_queue import PoisonQueue
    from shared.cli.storage import queue_client

    settings = ctx.settings()
    return settings, PoisonQueue(queue_client(settings, settings.poison_queue))


def _scan_selected(selection: Any, ctx: Context) -> tuple[Any, Any, list[Any], list[Any]]:
    """For requeue and purge: every poison message taken (hidden while we work), and those selected."""
    from shared.cli.poison_queue import iter_matching

    settings, queue = _open(ctx)
    with _guard(f"poison queue {settings.poison_queue!r}"):
        items = queue.scan() if queue.exists() else []
    return settings, queue, items, list(iter_matching(items, selection))


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    """Storage exceptions as a CLI error that says what was being read."""
    from shared.cli.storage import storage_failure

    try:
        yield
    except CliError:
        raise
    except Exception as exc:
        raise storage_failure(exc, what) from None


def _selection(args: argparse.Namespace) -> Any:
    from shared.cli.poison_queue import Selection

    selection = Selection(ids=tuple(args.ids), category=args.category, mailbox=args.mailbox,
                          everything=getattr(args, "everything", False))
    if selection.empty:
        raise CliError("say which messages: IDs, --category, --mailbox or --all", Exit.USAGE)
    return selection


def personalize(text: str, known: dict[str, str | None]) -> str:
    from shared.doctor import personalize as fill

    return fill(text, known)


def _known(settings: Any, mailbox: str | None) -> dict[str, str | None]:
    return {"<mailbox>": mailbox, "<client id>": settings.client_id, "<application (client) id>": settings.client_id}


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=110, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


# -- list / show --------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    from shared.cli.poison_queue import Selection, grouped, iter_matching

    settings, queue = _open(ctx)
    with _guard(f"poison queue {settings.poison_queue!r}"):
        items = queue.read_all() if queue.exists() else []
    items = list(iter_matching(items, Selection(category=args.category, mailbox=args.mailbox)))
    groups = grouped(items)
    out = ctx.out
    out.emit({"queue": settings.poison_queue, "count": len(items), "groups": [g.to_dict() for g in groups],
              "messages": [i.summary() for i in items]})
    if not items:
        out.line(f"{settings.poison_queue}: empty")
        return Exit.OK
    out.line(f"{settings.poison_queue}: {plural(len(items), 'message')} in {plural(len(groups), 'group')}")
    out.line()
    rows = []
    for n, group in enumerate(groups, 1):
        data = group.to_dict()
        rows.append({"n": n, "category": data["category"], "mailbox": data["mailbox"], "count": data["count"],
                     "codes": ", ".join(data["codes"]) or None, "last": data["lastFailedAt"]})
    out.table(rows, [Column("#", "n", align=">"), Column("CATEGORY", "category"), Column("MAILBOX", "mailbox"),
                     Column("COUNT", "count", align=">"), Column("CODES", "codes", 40),
                     Column("LAST FAILED", "last")])
    out.line()
    out.line("Fix, then requeue:")
    for n, group in enumerate(groups, 1):
        data = group.to_dict()
        known = _known(settings, group.mailbox)
        out.line(_wrap(f"{n:>2}  {personalize(data['hint'], known) or '(no hint)'}", "    "))
        for other in data["otherHints"][:2]:
            out.line(_wrap(f"    also: {personalize(other, known)}", "          "))
        selector = f"--category {group.category}" + (f" --mailbox {group.mailbox}" if group.mailbox else "")
        verb = "purge" if group.category == "invalid_message" else "requeue"
        out.line(f"    outbox poison {verb} {selector}")
    if args.messages:
        out.line()
        out.table([i.summary() for i in items],
                  [Column("ID", "id", 40), Column("CATEGORY", "category"), Column("CODE", "code", 32),
                   Column("MAILBOX", "mailbox"), Column("ATTEMPTS", "attempts", align=">"),
                   Column("FAILED AT", "failedAt"), Column("SUBJECT", "subject", 40)])
    return Exit.OK


def _find(items: list[Any], wanted: str) -> Any | None:
    return next((i for i in items if i.id == wanted), None) or next(
        (i for i in items if i.queue_message_id == wanted), None
    )


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    settings, queue = _open(ctx)
    with _guard(f"poison queue {settings.poison_queue!r}"):
        items = queue.read_all() if queue.exists() else []
    item = _find(items, args.id)
    if item is None:
        raise CliError(f"no message {args.id!r} on {settings.poison_queue}", Exit.NOT_FOUND)
    document: dict[str, Any] = {
        "queueMessageId": item.queue_message_id,
        "insertedOn": item.inserted_on.isoformat() if item.inserted_on else None,
        "dequeueCount": item.dequeue_count,
        "kind": "host-moved" if item.host_moved else "envelope",
    }
    if item.host_moved:
        document.update({"raw": item.text, "decoded": item.body, "hint": item.hint})
    else:
        document["envelope"] = item.envelope
    out = ctx.out
    out.emit(document)
    if item.host_moved:
        out.line(f"{item.id}: moved to {settings.poison_queue} by the Functions host (no outbox envelope)")
        out.line(f"  inserted {document['insertedOn']}, dequeue count {item.dequeue_count}")
        out.line(f"  fix: {item.hint}")
        out.line("raw message:")
        out.line(item.text)
        return Exit.OK
    error = item.error
    out.line(f"{item.id}: {error.get('category')} {error.get('code')}"
             + (f" ({error.get('status')})" if error.get("status") else "")
             + (f" via {error.get('transport')}" if error.get("transport") else ""))
    for name, value in (("mailbox", item.mailbox), ("subject", item.subject),
                        ("attempts", item.envelope.get("attempts")), ("first seen", item.envelope.get("firstSeen")),
                        ("failed at", item.envelope.get("failedAt")), ("request id", error.get("requestId")),
                        ("retryable", error.get("retryable")), ("detail", error.get("detail")),
                        ("fix", personalize(str(error.get("hint") or ""), _known(settings, item.mailbox))),
                        ("original in blob", item.message_blob)):
        if value not in (None, ""):
            out.line(f"  {name:<17} {value}")
    out.line("envelope:")
    out.line(json.dumps(item.envelope, indent=2, ensure_ascii=False))
    return Exit.OK


# -- requeue / purge ----------------------------------------------------------------------------------


def _body_of(item: Any, settings: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The v1 body to put back (an envelope's message, fetched from blob when parked) or the raw text."""
    if item.host_moved:
        return None, item.text
    if item.message_blob:
        from shared.cli.storage import blob_client

        container, _, name = item.message_blob.partition("/")
        blob = blob_client(settings, container, name)
        text = blob.download_blob().readall().decode("utf-8")
        try:
            value = json.loads(text)
        except ValueError:
            return None, text
        return (value, None) if isinstance(value, dict) else (None, text)
    message = item.envelope.get("message")
    if isinstance(message, dict):
        return message, None
    if isinstance(message, str):
        return None, message
    return None, None


def run_requeue(args: argparse.Namespace, ctx: Context) -> int:
    from shared.cli.storage import stores

    selection = _selection(args)
    settings, queue, items, chosen = _scan_selected(selection, ctx)
    out = ctx.out
    others = [i for i in items if i not in chosen]
    requeued: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    parts = stores(settings)
    store, status = parts.queues, parts.status
    try:
        queue.release(others)
        if not chosen:
            raise CliError(f"no poison message matches {selection.describe()}", Exit.NOT_FOUND)
        for item in chosen:
            entry = {"id": item.id, "category": item.category, "mailbox": item.mailbox}
            reason = _skip_reason(item, status)
            if reason:
                skipped.append({**entry, "reason": reason})
                continue
            if args.dry_run:
                requeued.append({**entry, "dryRun": True})
                continue
            try:
                _requeue_one(item, settings, store, status, queue)
            except Exception as exc:
                failed.append({**entry, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
                continue
            requeued.append(entry)
    finally:
        # Whatever was not requeued becomes visible again at once.
        try:
            queue.release(chosen)
        finally:
            parts.close()

    verb = "would requeue" if args.dry_run else "requeued"
    out.emit({"requeued": requeued, "skipped": skipped, "failed": failed, "dryRun": bool(args.dry_run),
              "queue": settings.queue})
    if requeued:
        out.table(requeued, [Column("ID", "id", 48), Column("CATEGORY", "category"), Column("MAILBOX", "mailbox")])
    for s in skipped:
        out.line(f"skipped {s['id']}: {s['reason']}")
    for f in failed:
        out.error(f"{f['id']}: not requeued: {f['error']}")
    out.line(f"{verb} {plural(len(requeued), 'message')} to {settings.queue}"
             + (f"; {len(skipped)} skipped" if skipped else "") + (f"; {len(failed)} failed" if failed else ""))
    if not skipped and not failed:
        return Exit.OK
    return Exit.PARTIAL if requeued else Exit.FAILED


def _skip_reason(item: Any, status: Any) -> str | None:
    if item.category == "invalid_message":
        return "invalid_message: it would fail again unchanged; send a corrected message (or purge it)"
    if not item.host_moved and item.envelope.get("message") is None and not item.message_blob:
        return "the envelope holds no original message"
    message_id = item.id if (item.envelope or (item.body or {}).get("id")) else None
    if message_id:
        row = status.get(message_id)
        if row is not None and row.state == "sent":
            return f"the status table says {message_id} was already sent ({row.sent_at}); purge this copy"
    return None


def _requeue_one(item: Any, settings: Any, store: Any, status: Any, queue: Any) -> None:
    body, raw = _body_of(item, settings)
    message_id = None
    if body is not None:
        message_id = body.get("id") if isinstance(body.get("id"), str) else None
        if message_id is None and item.envelope and item.envelope.get("id"):
            # Keep the id the message was known by, so the status row and Message-ID stay the same.
            message_id = str(item.envelope["id"])
            body = {"id": message_id, **body}
    elif item.body and isinstance(item.body.get("id"), str):
        message_id = item.body["id"]
    if message_id and status.get(message_id) is not None:
        status.reset_for_requeue(message_id)
    if body is not None:
        store.enqueue(body)
    elif raw is not None:
        store.requeue_raw(raw, delay_s=0)
    else:
        raise ValueError("nothing to requeue")
    queue.delete(item)


def run_purge(args: argparse.Namespace, ctx: Context) -> int:
    selection = _selection(args)
    settings, queue, items, chosen = _scan_selected(selection, ctx)
    out = ctx.out
    queue.release([i for i in items if i not in chosen])
    purged: list[str] = []
    failed: list[dict[str, str]] = []
    try:
        if not chosen:
            raise CliError(f"no poison message matches {selection.describe()}", Exit.NOT_FOUND)
        if not args.yes and not out.confirm(
            f"Delete {plural(len(chosen), 'message')} ({selection.describe()}) from {settings.poison_queue}?"
        ):
            raise CliError("nothing purged", Exit.FAILED)
        for item in chosen:
            try:
                queue.delete(item)
                _delete_parked(item, settings)
            except Exception as exc:
                failed.append({"id": item.id, "error": f"{type(exc).__name__}: {exc}"})
                continue
            purged.append(item.id)
    finally:
        queue.release(chosen)
    out.emit({"purged": purged, "failed": failed, "queue": settings.poison_queue})
    out.line(f"purged {plural(len(purged), 'message')} from {settings.poison_queue}"
             + (f"; {len(failed)} failed" if failed else ""))
    for f in failed:
        out.error(f"{f['id']}: not purged: {f['error']}")
    if not failed:
        return Exit.OK
    return Exit.PARTIAL if purged else Exit.FAILED


def _delete_parked(item: Any, settings: Any) -> None:
    if not item.message_blob:
        return
    from azure.core.exceptions import ResourceNotFoundError

    from shared.cli.storage import blob_client

    container, _, name = item.message_blob.partition("/")
    with contextlib.suppress(ResourceNotFoundError):
        blob_client(settings, container, name).delete_blob()
