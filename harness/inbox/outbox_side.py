"""outbox's side of the inbox page: status rows and the poison queue, read with outbox's own code.

The poison queue and the requeue go through the ``outbox`` CLI in-process (``shared.cli.main.main`` with
the settings as its environment), so the button does exactly what ``outbox poison requeue`` does and the
grouping and hints are the CLI's. Status rows are read with the function's own ``StatusStore``.
Every call blocks on storage: the server runs them in a worker thread.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Values = Mapping[str, str] | Callable[[], Mapping[str, str]]
STATUS_ROWS_LIMIT = 500


class OutboxSide:
    """``values``: outbox's settings (at least AzureWebJobsStorage and OUTBOX_QUEUE), or a callable that
    returns the current ones (``Harness.settings_values``: they follow a scenario change)."""

    def __init__(self, values: Values) -> None:
        self._values = values

    def values(self) -> dict[str, str]:
        current = self._values() if callable(self._values) else self._values
        return dict(current)

    def describe(self) -> dict[str, Any]:
        values = self.values()
        queue = values.get("OUTBOX_QUEUE", "outbox")
        return {"queue": queue, "poisonQueue": f"{queue}-poison",
                "statusTable": values.get("OUTBOX_STATUS_TABLE", "outboxstatus")}

    def cli(self, *argv: str) -> tuple[int, Any]:
        """Run ``outbox --json ARGV`` against these settings; (exit code, its JSON document)."""
        from shared.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        code = main(["--json", *argv], environ=self.values(), stdout=out, stderr=err, stdin=io.StringIO())
        text = out.getvalue().strip()
        try:
            document = json.loads(text) if text else {}
        except ValueError:
            document = {"output": text}
        if code != 0 and err.getvalue().strip() and isinstance(document, dict):
            document.setdefault("stderr", err.getvalue().strip())
        return code, document

    def poison(self) -> tuple[int, Any]:
        return self.cli("poison", "list", "--messages")

    def requeue(self, ids: Sequence[str] = (), *, category: str | None = None,
                mailbox: str | None = None) -> tuple[int, Any]:
        argv = ["poison", "requeue", *ids]
        if category:
            argv += ["--category", category]
        if mailbox:
            argv += ["--mailbox", mailbox]
        return self.cli(*argv)

    def status_rows(self, *, internet_message_id: str | None = None,
                    limit: int = STATUS_ROWS_LIMIT) -> list[dict[str, Any]]:
        """The newest status rows (by last update), or those carrying one Message-ID."""
        from shared.cli.storage import stores
        from shared.settings import load_settings

        settings = load_settings(self.values())
        with stores(settings) as parts:
            rows = [row.public() for row in parts.status.rows(limit=limit)]
        if internet_message_id:
            wanted = internet_message_id.strip("<>").lower()
            rows = [r for r in rows if (r.get("internetMessageId") or "").strip("<>").lower() == wanted]
        rows.sort(key=lambda r: r.get("updatedAt") or "", reverse=True)
        return rows

