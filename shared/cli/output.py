"""What the CLI prints: tables for people, JSON for scripts, progress on stderr, and the exit codes.

Everything goes through one :class:`Output`, so ``--json`` is honoured by every command the same way:
with ``--json`` stdout carries exactly one JSON document and nothing else (progress and prompts go to
stderr), so ``outbox ... --json | jq`` always works.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TextIO

from shared.redaction import redact, redact_tree


class Exit(IntEnum):
    """Exit codes scripts can rely on (also listed in ``outbox --help`` and docs/cli.md)."""

    OK = 0
    """Everything asked for was done; every doctor check passed (warnings allowed)."""
    FAILED = 1
    """A check or the operation failed (doctor found a problem, the send was refused, nothing done)."""
    USAGE = 2
    """Bad command line, unreadable settings or input file: nothing was attempted."""
    PARTIAL = 3
    """Some items succeeded and some failed (bulk enqueue, poison requeue/purge)."""
    NOT_FOUND = 4
    """The message id (status, poison show/requeue) is not known."""
    INTERRUPTED = 130
    """Stopped with Ctrl-C."""


EXIT_CODES_HELP = """exit codes:
  0    ok: done; every doctor check passed
  1    failed: a check or the operation failed
  2    usage: bad arguments, settings or input file; nothing was attempted
  3    partial: some items succeeded, some failed
  4    not found: no message with that id
  130  interrupted (Ctrl-C)"""


class CliError(Exception):
    """Stop the command with ``message`` on stderr and exit ``code`` (JSON: ``{"error": message}``)."""

    def __init__(self, message: str, code: Exit = Exit.FAILED, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = dict(details or {})


@dataclass
class Column:
    title: str
    key: str
    max_width: int | None = None
    align: str = "<"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return " ".join(text.split()) if ("\n" in text or "\r" in text) else text


def _clip(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], indent: str = "") -> str:
    """A plain-text table: header, a rule, one line per row; long cells clipped to ``max_width``."""
    cells = [[_clip(_cell(row.get(c.key)), c.max_width) for c in columns] for row in rows]
    widths = [len(c.title) for c in columns]
    for line in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, line, strict=True)]

    def fmt(values: Sequence[str]) -> str:
        parts = [f"{v:{c.align}{w}}" for v, c, w in zip(values, columns, widths, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    out = [fmt([c.title for c in columns]), indent + "  ".join("-" * w for w in widths)]
    out.extend(fmt(line) for line in cells)
    return "\n".join(out)


@dataclass
class Output:
    """The CLI's two streams and its mode. Tests pass StringIO objects."""

    json_mode: bool = False
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    # -- plain text ---------------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """Human output; silent in JSON mode (the JSON document carries the same facts)."""
        if not self.json_mode:
            print(text, file=self.stdout)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], indent: str = "") -> None:
        if not self.json_mode:
            print(format_table(rows, columns, indent), file=self.stdout)

    def info(self, text: str) -> None:
        """A remark for people that never pollutes stdout (always stderr)."""
        print(text, file=self.stderr)

    def error(self, text: str) -> None:
        print(f"outbox: {redact(text)}", file=self.stderr)

    def emit(self, document: Any) -> None:
        """The JSON document of a command (only in JSON mode)."""
        if self.json_mode:
            json.dump(document, self.stdout, indent=2, ensure_ascii=False, default=str)
            self.stdout.write("\n")

    def fail(self, message: str, code: Exit, details: Mapping[str, Any] | None = None) -> int:
        """Report a command that stopped: the message on stderr and, with ``--json``, as the document.
        Error texts quote servers and settings, so they are redacted (a command's own document is not:
        ``poison show`` prints a producer's message as it was)."""
        self.error(message)
        if self.json_mode:
            self.emit(redact_tree({"error": message, "exitCode": int(code), **(details or {})}))
        return int(code)

    # -- interaction --------------------------------------------------------------------------------
    def confirm(self, question: str) -> bool:
        """Ask on stderr, read a line from stdin; anything but y/yes (or no terminal) is a no."""
        self.stderr.write(f"{question} [y/N] ")
        self.stderr.flush()
        try:
            answer = self.stdin.readline()
        except (OSError, ValueError):
            return False
        return answer.strip().lower() in ("y", "yes")

    def progress(self, total: int, label: str) -> Progress:
        return Progress(self.stderr, total, label)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise (logs, CI)."""

    def __init__(self, stream: TextIO, total: int, label: str, *, width: int = 30) -> None:
        self.stream = stream
        self.total = max(total, 0)
        self.label = label
        self.width = width
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        self._draw()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _text(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%} {self.rate:,.0f}/s{failed}"

    def _draw(self, *, force: bool = False) -> None:
        if self.interactive:
            now = time.monotonic()
            if force or now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self._text())
                self.stream.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else 10
        if force or decile > self._last_decile:
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self._text() + "\n")
            self.stream.flush()


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def join_nonempty(parts: Iterable[str | None], sep: str = ", ") -> str:
    return sep.join(p for p in parts if p)
