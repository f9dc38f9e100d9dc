"""``outbox``: the operator's command line (doctor, token, send, enqueue, status, poison).

Only argparse and the command modules' parsers are imported here; every Azure SDK, MSAL and httpx is
imported inside the command that needs it, so ``outbox --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from shared.cli import accounts, doctor, enqueue, poison, send, status, tokeninfo
from shared.cli.context import Context
from shared.cli.output import EXIT_CODES_HELP, CliError, Exit, Output
from shared.errors import OutboxError
from shared.redaction import redact_tree

DESCRIPTION = """\
outbox: send mail from Microsoft 365 through a queue, and find out why it did not go.

Settings are read as the function reads them: the environment first, then --settings FILE
(a local.settings.json, or a KEY=VALUE file such as the harness's .state/outbox.env), then
./local.settings.json. So `outbox doctor` next to `func start` sees what the function sees."""

EPILOG = f"""\
examples:
  outbox doctor --mailbox noreply@contoso.example --transport both
  outbox --settings .state/outbox.env token --transport smtp
  outbox send --from noreply@contoso.example --to you@fabrikam.example --subject Hi --text Hello
  outbox enqueue messages.jsonl
  outbox poison list
  outbox status invoice-2026-0042 --json
  outbox login --mailbox sender@contoso.example      # delegated: send as a signed-in user
  outbox accounts

{EXIT_CODES_HELP}

More: docs/cli.md"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors, which is our USAGE code; keep its message on stderr."""


def common_options() -> argparse.ArgumentParser:
    """--settings and --json, accepted before or after the command (``outbox doctor --json`` works)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help="local.settings.json or KEY=VALUE env file (e.g. .state/outbox.env); the environment wins",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document on stdout"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = _Parser(
        prog="outbox",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    doctor.register(sub, common)
    tokeninfo.register(sub, common)
    send.register(sub, common)
    enqueue.register(sub, common)
    status.register(sub, common)
    poison.register(sub, common)
    accounts.register(sub, common)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code (the console script passes it to sys.exit)."""
    parser = build_parser()
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    try:
        # argparse writes usage errors to sys.stderr and raises SystemExit(2).
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out_stream, err_stream
        try:
            args = parser.parse_args(argv)
        finally:
            sys.stdout, sys.stderr = saved
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else Exit.USAGE

    out = Output(
        json_mode=bool(getattr(args, "json", False)),
        stdout=out_stream,
        stderr=err_stream,
        stdin=stdin or sys.stdin,
    )
    ctx = Context(out=out, settings_file=getattr(args, "settings", None), environ=environ)
    try:
        with ctx.platform_environment():
            return int(args.func(args, ctx))
    except CliError as exc:
        return out.fail(exc.message, exc.code, exc.details)
    except OutboxError as exc:
        out.error(str(exc) + (f"\n  fix: {exc.hint}" if exc.hint else ""))
        if out.json_mode:
            out.emit(redact_tree({"error": exc.to_dict(), "exitCode": int(Exit.FAILED)}))
        return int(Exit.FAILED)
    except KeyboardInterrupt:
        out.error("interrupted")
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # `outbox poison list | head`: the reader is gone, which is not an error of ours.
        if out_stream is sys.stdout:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit, so the final flush succeeds
        return int(Exit.OK)


if __name__ == "__main__":
    sys.exit(main())
