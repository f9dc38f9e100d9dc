"""Exchange's limits on the Graph path: message size as Exchange counts it, recipients per message and per day.

Graph sends go through the same Exchange transport as SMTP, so its limits apply (microsoft-graph-docs#7889:
"This API is subject to the same limits as Exchange Online"; Q&A 542802). How each one answers:

* **Size.** A message may not pass its mailbox's MaxSendSize (``mailboxes.<m>.max_send_bytes``, 35 MB by
  default) nor the 150 MB ceiling (``limits.graph.max_message_bytes``). Exchange counts the message as it
  travels, in MIME: attachments base64-encoded, so about 4/3 of their bytes (Microsoft, "Message size limits
  in Exchange Server": encoding "increases the size of the message by approximately 33%"; the Exchange team's
  "Allowing larger messages in Office 365", 2015: the 150 MB limit is the size "after any potential
  transcoding"). Hence a 35 MB MaxSendSize takes attachments of about 26 MB, not 35. The rule here:
  ``size = UTF-8 bytes of subject and body + 4 * ceil(n / 3) for each attachment of n bytes`` (headers and MIME
  boundaries, a few hundred bytes, are left out). An upload session fails at the PUT whose bytes take the
  draft past the limit (400 ``ErrorMessageSizeExceeded``: [obs] microsoft-graph-docs-contrib#2561, "after
  39 MB" of a 43 MB file); sendMail and a draft's ``/send`` fail at submission ([obs] msgraph-sdk-java#2148,
  "..., Cannot submit the message").
* **Recipients.** Over the per-message limit (500) or the mailbox's rolling 24-hour budget (10,000), Exchange
  accepts the submission and sends the sender an NDR afterwards (5.5.3 too many recipients; 5.1.90 daily
  limit, OfficeDocs-Exchange#2729). The fake does the same: 202, nothing delivered to anyone, and the NDR
  recorded in the request log (operation ``ndr``, status the NDR's enhanced code, detail its text).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from harness.throttle import Clock, SlidingWindow


def encoded_size(n: int) -> int:
    """Bytes of ``n`` bytes in base64, as a MIME part carries them."""
    return 4 * ((n + 2) // 3)


def message_size(message: Mapping[str, Any], attachment_sizes: Iterable[int]) -> int:
    """The message's size as Exchange's MaxSendSize counts it (see the module docstring for the rule)."""
    body = message.get("body")
    content = body.get("content") if isinstance(body, Mapping) else None
    text = f"{message.get('subject') or ''}{content if isinstance(content, str) else ''}"
    return len(text.encode("utf-8")) + sum(encoded_size(n) for n in attachment_sizes)


class RecipientBudget:
    """Recipients each mailbox sent over the rolling window; Exchange's recipient rate limit."""

    def __init__(self, limit: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._window = SlidingWindow(limit, window_s, clock)

    def take(self, mailbox: str, recipients: int) -> bool:
        """Count ``recipients`` for ``mailbox`` if they fit today; False (nothing counted) when they do not."""
        return self._window.try_consume(mailbox.lower(), recipients) == 0
