"""``outbox status ID``: what happened to one message, from the status table."""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.context import Context
from shared.cli.output import CliError, Exit

EPILOG = """\
examples:
  outbox status invoice-2026-0042
  outbox status invoice-2026-0042 --json | jq -r .state

States: queued (accepted, not tried yet), sending, sent, retrying (next attempt at nextAttemptAt),
ambiguous (may have been delivered; the next attempt checks Sent Items first), poisoned (see
`outbox poison show ID`), failed (a send --now that was refused).

exit codes: 0 found (whatever its state); 4 no message with that id; 1 storage failed; 2 settings."""

_STATE_WORDS = {
    "queued": "accepted, waiting on the queue",
    "sending": "being sent right now",
    "sent": "accepted by Microsoft 365 (delivery problems come back as NDRs to the mailbox)",
    "retrying": "failed temporarily; it will be tried again",
    "ambiguous": "may have been delivered; the next attempt looks in Sent Items before resending",
    "poisoned": "on the poison queue: fix the cause, then `outbox poison requeue ID`",
    "failed": "refused when sent with --now / mode=now; nothing was queued",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="what happened to a message (status table)",
        description="Show the status row of one message id.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id", metavar="ID", help="the message id (the producer's id, or the queue message id)")
    p.set_defaults(func=run)


def fetch_row(ctx: Context, message_id: str) -> Any:
    from shared.cli.storage import storage_failure, stores

    settings = ctx.settings()
    with stores(settings) as parts:
        try:
            return parts.status.get(message_id)
        except Exception as exc:
            raise storage_failure(exc, f"status table {settings.status_table!r}") from None


def run(args: argparse.Namespace, ctx: Context) -> int:
    row = fetch_row(ctx, args.id)
    if row is None:
        raise CliError(f"no message with id {args.id!r} in the status table", Exit.NOT_FOUND)
    public = row.public()
    out = ctx.out
    out.emit(public)
    out.line(f"{public['id']}: {public['state']} ({_STATE_WORDS.get(public['state'], '')})")
    fields = [
        ("mailbox", public.get("mailbox")),
        ("transport", public.get("transport")),
        ("attempts", public.get("attempts")),
        ("first seen", public.get("firstSeen")),
        ("updated", public.get("updatedAt")),
        ("sent at", public.get("sentAt")),
        ("sent via", public.get("sentVia")),
        ("next attempt", public.get("nextAttemptAt")),
        ("Message-ID", public.get("internetMessageId")),
        ("request ids", ", ".join(public.get("requestIds") or ()) or None),
        ("possibly duplicated", "yes" if public.get("possiblyDuplicated") else None),
        ("Sent Items copy", _sent_copy_words(public.get("sentCopy"))),
    ]
    for name, value in fields:
        if value not in (None, ""):
            out.line(f"  {name:<20} {value}")
    error = public.get("lastError")
    if error:
        out.line(f"  {'last error':<20} {error.get('category')} {error.get('code')}"
                 + (f" ({error.get('status')})" if error.get("status") else ""))
        if error.get("detail"):
            out.line(f"  {'detail':<20} {error['detail']}")
        if error.get("hint"):
            out.line(f"  {'fix':<20} {error['hint']}")
    return Exit.OK


_COPY_WORDS = {
    "pending": "not yet looked for (due at the next attempt time)",
    "exchange": "kept by Exchange",
    "saved": "saved by outbox through Graph",
    "unknown": "unknown: the app may not read Sent Items",
    "failed": "could not be saved",
    "skipped": "not saved",
}


def _sent_copy_words(copy: Any) -> str | None:
    """An SMTP send's Sent Items copy (OUTBOX_SMTP_SENT_COPY) in words, with why when it failed."""
    if not isinstance(copy, dict):
        return None
    words = _COPY_WORDS.get(str(copy.get("state")), str(copy.get("state")))
    return words + (f": {copy['detail']}" if copy.get("detail") else "")
