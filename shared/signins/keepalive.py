"""The keep-alive: every stored sign-in uses its refresh token once per run (a timer, daily).

Entra drops a refresh token unused for 90 days (AADSTS700082); a mailbox that sends rarely would lose
its sign-in silently. The run also notices a revoked or MFA-blocked sign-in within a day, before a
message needs it. One event per account: ``outbox.keepalive`` with the outcome and, on failure, the
classified code and the fix. Dead sign-ins are reported again without calling Entra.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from shared.redaction import redact_tree

if TYPE_CHECKING:
    from shared.signins.store import SigninStore
    from shared.signins.tokens import DelegatedTokens, Refreshed

log = logging.getLogger("outbox")
EVENT = "outbox.keepalive"


def run(tokens: DelegatedTokens, store: SigninStore) -> list[Refreshed]:
    results = []
    for mailbox in sorted(store.mailboxes()):
        stored = store.get(mailbox)
        if stored is None:  # logged out meanwhile
            continue
        result = tokens.refresh(stored.record.mailbox, stored.record.account)
        results.append(result)
        dims = event(result)
        (log.info if result.ok else log.warning)("%s %s", EVENT, json.dumps(dims), extra={"custom_dimensions": dims})
    return results


def event(result: Refreshed) -> dict[str, Any]:
    err = result.error
    return redact_tree({
        "event": EVENT,
        "outcome": "refreshed" if result.ok else ("signin_required" if err and err.category == "signin_required"
                                                  else "failed"),
        "mailbox": result.mailbox,
        "account": result.account,
        "resources": list(result.resources),
        "category": err.category if err else None,
        "code": err.code if err else None,
        "detail": err.detail if err else None,
        "hint": err.hint if err else None,
    })
