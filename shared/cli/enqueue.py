"""``outbox enqueue FILE``: validate a whole file, then put every message on the queue."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli.context import Context
from shared.cli.output import CliError, Exit, plural

if TYPE_CHECKING:
    from shared.pipeline import Enqueued

EPILOG = """\
examples:
  outbox enqueue messages.jsonl                    one v1 message per line
  outbox enqueue people.csv --template invite.json  {{column}} placeholders filled per row
  outbox enqueue messages.jsonl --id-prefix run-2026-01-15
                                                   ids run-2026-01-15-<line> for lines without one,
                                                   so enqueueing the same file again sends nothing twice
  outbox enqueue messages.jsonl --dry-run          check every line, send nothing
  cat messages.jsonl | outbox enqueue -

Every line is checked first (message format, allowed sender, transport rules, 64 KiB queue limit,
duplicate ids); one bad line and nothing is enqueued (exit 2), with each bad line named. Then the
messages are sent by a few threads over one queue client, with progress on stderr.

Template example (invite.json), with a CSV whose header has email,name:
  {"from": "noreply@contoso.example", "to": [{"address": "{{email}}", "name": "{{name}}"}],
   "subject": "Welcome, {{name}}", "text": "Hello {{name}}", "id": "invite-{{email}}"}

exit codes: 0 all enqueued; 1 none enqueued (storage failed); 2 invalid file, nothing enqueued;
3 some enqueued, some failed (each failed line is listed); 130 interrupted."""

# Consecutive send failures after which the rest is not even tried (storage down, wrong queue URL).
_GIVE_UP_AFTER = 20


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "enqueue",
        parents=[common],
        help="bulk enqueue a JSON lines or CSV file",
        description="Validate every line of FILE, then enqueue them all onto OUTBOX_QUEUE.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="JSON lines (.jsonl) or CSV (.csv, needs --template); - for stdin")
    p.add_argument("--template", metavar="FILE", type=Path, help="v1 message with {{column}} placeholders")
    p.add_argument("--format", choices=("jsonl", "csv"), help="input format (default: from the file name)")
    p.add_argument("--id-prefix", metavar="PREFIX", help="give lines without an id the id PREFIX-<line>")
    p.add_argument("--workers", type=int, default=8, metavar="N", help="parallel queue writers (default 8)")
    p.add_argument("--dry-run", action="store_true", help="validate only; enqueue nothing")
    p.set_defaults(func=run)


def _read_input(name: str, ctx: Context) -> str:
    if name == "-":
        return ctx.out.stdin.read()
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"no such file: {name}", Exit.USAGE) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {name}: {exc}", Exit.USAGE) from None


def run(args: argparse.Namespace, ctx: Context) -> int:
    from shared.cli import bulk

    out = ctx.out
    if not 1 <= args.workers <= 32:
        raise CliError("--workers must be between 1 and 32", Exit.USAGE)
    if args.id_prefix and not bulk.valid_id_prefix(args.id_prefix):
        raise CliError("--id-prefix must be up to 110 characters of A-Z a-z 0-9 . _ : @ -", Exit.USAGE)
    settings = ctx.settings(require_storage=not args.dry_run)
    template = None
    if args.template is not None:
        try:
            template = bulk.load_template(args.template.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CliError(f"cannot read the template: {exc}", Exit.USAGE) from None
        except bulk.TemplateError as exc:
            raise CliError(f"{args.template}: {exc}", Exit.USAGE) from None
    text = _read_input(args.file, ctx)
    fmt = bulk.sniff_format(args.file, args.format)
    started = time.monotonic()
    try:
        items, problems = bulk.prepare(
            text,
            fmt=fmt,
            template=template,
            rules=settings,
            id_prefix=args.id_prefix,
        )
    except bulk.TemplateError as exc:
        raise CliError(str(exc), Exit.USAGE) from None
    checked_s = time.monotonic() - started

    if problems:
        shown = problems[: bulk.MAX_LISTED_PROBLEMS]
        for problem in shown:
            out.error(f"{args.file}: {problem}")
        more = len(problems) - len(shown)
        if more:
            out.error(f"... and {plural(more, 'more bad line')}")
        raise CliError(
            f"{plural(len(problems), 'bad line')} in {args.file}; nothing was enqueued",
            Exit.USAGE,
            details={"problems": [{"line": p.line, "error": p.message} for p in problems], "enqueued": 0},
        )
    if not items:
        raise CliError(f"{args.file} holds no messages; nothing was enqueued", Exit.USAGE)

    if args.dry_run:
        out.line(f"{plural(len(items), 'message')} checked in {checked_s:.2f} s; nothing enqueued (--dry-run)")
        out.emit({"checked": len(items), "enqueued": 0, "dryRun": True})
        return Exit.OK

    sent, failures, interrupted, elapsed = _send_all(items, settings, args.workers, ctx)
    rate = sent / elapsed if elapsed > 0 else 0.0
    for line, error in failures[: bulk.MAX_LISTED_PROBLEMS]:
        out.error(f"{args.file}: line {line}: not enqueued: {error}")
    not_tried = len(items) - sent - len(failures)
    out.line(
        f"enqueued {sent} of {plural(len(items), 'message')} to {settings.queue} in {elapsed:.1f} s "
        f"({rate:,.0f}/s)"
        + (f"; {len(failures)} failed" if failures else "")
        + (f"; {not_tried} not tried" if not_tried else "")
    )
    out.emit(
        {
            "queue": settings.queue,
            "total": len(items),
            "enqueued": sent,
            "failed": [{"line": line, "error": error} for line, error in failures],
            "notTried": not_tried,
            "seconds": round(elapsed, 3),
            "perSecond": round(rate, 1),
        }
    )
    if interrupted:
        return Exit.INTERRUPTED
    if sent == len(items):
        return Exit.OK
    return Exit.PARTIAL if sent else Exit.FAILED


def _send_all(items: list[Any], settings: Any, workers: int, ctx: Context) -> tuple[int, list[tuple[int, str]], bool, float]:
    from shared.cli.storage import storage_failure
    from shared.runtime import build_runtime
    from shared.storage import StorageOptions

    # The pipeline's own enqueue: the same queued status row as POST /api/send and `outbox send`, and
    # the same refusal of an id that already names another message.
    runtime = build_runtime(settings, sending=False, storage=StorageOptions.cli(settings))
    try:
        runtime.queues.ensure_queue(settings.queue)
    except Exception as exc:
        runtime.close()
        raise storage_failure(exc, f"queue {settings.queue!r}") from None
    sent = 0
    failures: list[tuple[int, str]] = []
    consecutive = 0
    interrupted = False
    started = time.monotonic()
    pending: dict[Future[Enqueued], int] = {}
    queue = iter(items)
    with ctx.out.progress(len(items), "enqueue") as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            # A bounded window of futures: memory stays flat and a dead queue stops the run early.
            def top_up() -> None:
                while len(pending) < workers * 4 and consecutive < _GIVE_UP_AFTER:
                    item = next(queue, None)
                    if item is None:
                        return
                    pending[pool.submit(runtime.pipeline.enqueue, item.body)] = item.line

            top_up()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    line = pending.pop(future)
                    failure = future.exception()
                    if failure is None:
                        sent += 1
                        consecutive = 0
                        bar.advance()
                    else:
                        consecutive += 1
                        failures.append((line, _describe(failure)))
                        bar.advance(failed=1)
                top_up()
        except KeyboardInterrupt:
            interrupted = True
            for future in pending:
                future.cancel()
    runtime.close()
    return sent, sorted(failures), interrupted, time.monotonic() - started


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
