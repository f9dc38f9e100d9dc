"""``outbox doctor``: run the checklist live and print one line per check with the fix."""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from shared.cli.context import Context
from shared.cli.output import CliError, Exit, plural

if TYPE_CHECKING:
    from shared.doctor import Check

EPILOG = """\
examples:
  outbox doctor --mailbox noreply@contoso.example
  outbox doctor --mailbox noreply@contoso.example --transport both --json
  outbox doctor --mailbox app@contoso.example --from noreply@contoso.example --transport smtp
                          authenticate as app@, then check MAIL FROM:<noreply@> (Send As)
  outbox doctor --mailbox noreply@contoso.example --send-test-to me@contoso.example
                          really send one test message through outbox's own transport

Checks, in order: settings present; sender allowed (OUTBOX_ALLOWED_SENDERS); Key Vault certificate
readable (thumbprint); certificate valid (expiry, days left); then per transport: token acquired (an
AADSTS error decoded); token claims (aud, roles vs scp, tid, appid, exp); SMTP: connect, STARTTLS,
AUTH XOAUTH2 as --mailbox, MAIL FROM --from, then RSET and QUIT without sending; Graph: read one message
id from Sent Items when the app may read (Mail.ReadBasic), else "not probed"; optional test send; after
an SMTP test send, whether this tenant keeps SMTP submissions in Sent Items (OUTBOX_SMTP_SENT_COPY).

A check that depends on a failed one is skipped, so one cause gives one failing line. When Exchange
answers a bare 535 5.7.3 to a token that is right, doctor does not guess: it lists the causes it could
not rule out, each with the Exchange Online PowerShell command that checks it.

exit codes: 0 every check passed (warnings allowed); 1 a check failed; 2 bad arguments."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="run the checklist live: why does sending fail?",
        description="Diagnose sending from one mailbox: certificate, token, claims, SMTP and Graph.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mailbox", required=True, metavar="ADDR", help="the mailbox to authenticate as (user=)")
    p.add_argument("--transport", choices=("graph", "smtp", "both"),
                   help="what to check (default: OUTBOX_TRANSPORT)")
    p.add_argument("--from", dest="sender", metavar="ADDR",
                   help="the From address to check with MAIL FROM and the test send (default: --mailbox)")
    p.add_argument("--send-test-to", metavar="ADDR", help="really send one test message to ADDR")
    p.add_argument("--sent-copy-wait", type=float, default=60.0, metavar="SECONDS",
                   help="after an SMTP test send, look for it in Sent Items this long (default: 60)")
    p.set_defaults(func=run)


# Settings the function needs but a diagnosis of sending does not (placeholder used meanwhile).
NOT_NEEDED_BY_DOCTOR = {"OUTBOX_QUEUE": "outbox"}

STATUS_WORDS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _validated_address(value: str, flag: str) -> str:
    from shared.addresses import AddressError, normalize_addr_spec

    try:
        return normalize_addr_spec(value)
    except AddressError as exc:
        raise CliError(f"{flag} {value!r} {exc}", Exit.USAGE) from None


def run(args: argparse.Namespace, ctx: Context) -> int:
    from shared.doctor import run_doctor, transports_for
    from shared.settings import SettingsError, load_settings, merged_values

    mailbox = _validated_address(args.mailbox, "--mailbox")
    sender = _validated_address(args.sender, "--from") if args.sender else mailbox
    send_to = _validated_address(args.send_test_to, "--send-test-to") if args.send_test_to else None
    if ctx.settings_file is not None and not ctx.settings_file.is_file():
        raise CliError(f"settings file not found: {ctx.settings_file}", Exit.USAGE)
    settings = None
    problems: dict[str, str] | None = None
    warnings: dict[str, str] | None = None
    try:
        settings = load_settings(ctx.environ, ctx.settings_file, require_storage=False)
    except SettingsError as exc:
        problems = exc.problems
        if set(problems) <= set(NOT_NEEDED_BY_DOCTOR):
            # The queue is the function's business, not the mailbox's: check sending anyway.
            values = merged_values(ctx.environ, ctx.settings_file)
            values.update({name: placeholder for name, placeholder in NOT_NEEDED_BY_DOCTOR.items() if name in problems})
            settings, warnings, problems = load_settings(values, require_storage=False), problems, None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read settings: {exc}", Exit.USAGE) from None
    transport = args.transport or (settings.transport if settings else "graph")
    transports = transports_for(transport)

    out = ctx.out
    if not out.json_mode:
        out.line(f"outbox doctor: mailbox {mailbox}" + (f", from {sender}" if sender != mailbox else "")
                 + f", transport {transport}")
    report = run_doctor(
        settings,
        mailbox=mailbox,
        transports=transports,
        sender=sender,
        send_test_to=send_to,
        sent_copy_wait_s=max(0.0, args.sent_copy_wait),
        settings_problems=problems,
        settings_warnings=warnings,
        on_check=None if out.json_mode else lambda check: _print_check(out, check),
    )
    out.emit(report.to_dict())
    failed = report.failed
    if failed:
        out.line(f"\n{plural(len(failed), 'check')} failed: {', '.join(c.title for c in failed)}")
        return Exit.FAILED
    warned = [c for c in report.checks if c.status == "warn"]
    out.line("\nall checks passed" + (f" ({plural(len(warned), 'warning')})" if warned else ""))
    return Exit.OK


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=110, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)


def _print_check(out: Any, check: Check) -> None:
    out.line(f"{STATUS_WORDS[check.status]}  {check.title:<30} {check.summary}")
    if check.status in ("fail", "warn") and check.detail and check.detail not in check.summary:
        out.line(_wrap(f"server said: {check.detail}", "      "))
    if check.status in ("fail", "warn") and check.fix:
        out.line(_wrap(f"fix: {check.fix}", "      "))
    if check.remaining:
        out.line("      remaining causes (not ruled out; Exchange does not say which):")
        for n, cause in enumerate(check.remaining, 1):
            out.line(_wrap(f"{n}. {cause.why}", "        "))
            out.line(_wrap(f"check: {cause.check}", "           "))
            out.line(_wrap(f"fix:   {cause.fix}", "           "))
