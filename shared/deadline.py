"""An HTTP answer within a deadline, whatever storage or Key Vault are doing.

The work of a request runs on a small pool of its own; the request thread waits at most
``OUTBOX_API_DEADLINE_S`` for it and then answers 503 with Retry-After. A caller told "503" must be told
the truth about its message, so the work reports its steps (:class:`Progress`): once the deadline has
passed, a step that would make the message queued (or sent) is not started any more, and the answer says
whether the step that may have queued (or sent) it had already begun. Resending the same id is always
safe: ids deduplicate.

The pool is bounded; work that has not started when its deadline passes is cancelled, so a stalled
dependency cannot pile up more threads than the pool holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("outbox.deadline")

_POOL_SIZE = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="outbox-http")
        return _pool


class Abandoned(Exception):
    """Raised inside the work when it reaches a committing step after its caller was answered."""


class Progress:
    """The steps of one request's work, shared between the work and the thread that answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self.message_id: str | None = None
        self.committing = False  # a step that may queue or send the message has begun

    def identified(self, message_id: str) -> None:
        """The message's id, as soon as it is known (the late answer names it)."""
        self.message_id = message_id

    def commit(self) -> None:
        """Call before a step that may make the message queued or sent; raises Abandoned if too late."""
        with self._lock:
            if self._abandoned:
                raise Abandoned
            self.committing = True

    @property
    def abandoned(self) -> bool:
        """The caller has been answered already: nothing the work says now reaches it."""
        with self._lock:
            return self._abandoned

    def abandon(self) -> bool:
        """Stop further commits; returns whether a committing step had already begun."""
        with self._lock:
            self._abandoned = True
            return self.committing


@dataclass(frozen=True)
class Late(Generic[T]):
    """The deadline passed: what the answer can truthfully say."""

    message_id: str | None
    may_have_committed: bool


def run_with_deadline(work: Callable[[Progress], T], deadline_s: float) -> T | Late[T]:
    """``work(progress)``'s result, or :class:`Late` once ``deadline_s`` has passed."""
    progress = Progress()
    future: Future[T] = _executor().submit(work, progress)
    try:
        return future.result(timeout=deadline_s)
    except FutureTimeout:
        if future.cancel():
            return Late(progress.message_id, may_have_committed=False)
        committed = progress.abandon()
        if future.done() and future.exception() is None:
            return future.result()  # it finished in the meantime: the real answer is better
        future.add_done_callback(_log_late_failure)
        return Late(progress.message_id, may_have_committed=committed)


def _log_late_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None and not isinstance(exc, Abandoned):
        log.warning("work answered late failed afterwards: %s: %s", type(exc).__name__, exc)
