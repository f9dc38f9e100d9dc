"""Scripted failures for the fakes: which request fails, and how.

A rule selects requests (service, mailbox, recipient, operation), decides whether this one fires (the Nth
match, at most ``times`` times, with a seeded probability) and says what happens:

* ``reply``: answer the catalog entry ``catalog`` (exact shape from ``shared.catalog``);
* ``latency``: wait ``latency_s`` seconds, then serve the request normally (latency composes: the
  longest latency rule that fires is added to the service's base latency from the scenario limits,
  and at most one other rule (the first that fires) then decides what happens);
* ``drop``: close the connection before the request is processed (nothing happened on the server);
* ``drop_after_body``: process the request (the mail IS delivered), then close the connection without an
  answer: the ambiguous case a client must not blindly resend;
* ``down``: the service is unreachable while the rule exists (``down_mode`` ``refused`` closes the
  listener, ``reset`` accepts and resets every connection).

A rule without ``operation`` selects the service's default operation when it has one (SMTP: ``data``,
the stage where a message is submitted), so its ``nth`` counts messages, not SMTP commands.

Every rule draws from its own ``random.Random`` seeded from (engine seed, rule id), so a run replays
exactly when the same requests arrive in the same order, whatever other rules do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

SERVICES = ("entra", "msi", "keyvault", "graph", "smtp")
ACTIONS = ("reply", "latency", "drop", "drop_after_body", "down")
Action = Literal["reply", "latency", "drop", "drop_after_body", "down"]
# Services whose fakes consult the engine several times per request (SMTP: once per stage): a rule
# without ``operation`` belongs to this one, so that it fires (and counts ``nth``) once per message.
DEFAULT_OPERATIONS: dict[str, str] = {"smtp": "data"}


class FaultRuleError(ValueError):
    """A fault rule that cannot work (unknown service or action, reply without catalog entry...)."""


@dataclass(frozen=True)
class FaultRule:
    service: str
    action: Action = "reply"
    catalog: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    mailbox: str | None = None
    recipient: str | None = None
    operation: str | None = None
    nth: int = 1
    times: int | None = None
    probability: float | None = None
    latency_s: float = 0.0
    retry_after: int | None = None
    down_mode: Literal["refused", "reset"] = "refused"
    id: str = ""

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise FaultRuleError(f"fault service {self.service!r} is not one of {', '.join(SERVICES)}")
        if self.action not in ACTIONS:
            raise FaultRuleError(f"fault action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.action == "reply" and not self.catalog:
            raise FaultRuleError("a 'reply' fault needs the catalog entry to answer ('catalog = \"...\"')")
        if self.nth < 1:
            raise FaultRuleError("nth counts from 1")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise FaultRuleError("probability must be between 0 and 1")
        if self.times is not None and self.times < 0:
            raise FaultRuleError("times must be >= 0")
        if self.down_mode not in ("refused", "reset"):
            raise FaultRuleError("down_mode is 'refused' or 'reset'")
        if self.latency_s < 0:
            raise FaultRuleError("latency_s must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise FaultRuleError(f"unknown fault rule field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "params" in values:
            values["params"] = {str(k): str(v) for k, v in dict(values["params"]).items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        return {k: v for k, v in data.items() if v is not None and v != {}}

    def selects(
        self,
        service: str,
        *,
        mailbox: str | None,
        recipients: Sequence[str],
        operation: str | None,
    ) -> bool:
        if service != self.service:
            return False
        if self.mailbox is not None and (mailbox or "").lower() != self.mailbox.lower():
            return False
        if self.recipient is not None and self.recipient.lower() not in {r.lower() for r in recipients}:
            return False
        default = DEFAULT_OPERATIONS.get(service)
        wanted = self.operation or default
        if wanted is None:
            return True
        return (operation or default or "").lower() == wanted.lower()


@dataclass(frozen=True)
class Fault:
    """What a fake must do with this request.

    ``rule`` is the one non-latency rule that fired (None: only latency applies, ``action`` is
    ``"latency"``); ``extra_latency_s`` is the base latency of the service plus the longest latency rule
    that fired. ``delay()`` waits for all of it (plus ``rule.latency_s``), without blocking the loop.
    """

    rule: FaultRule | None
    extra_latency_s: float = 0.0
    latency_rules: tuple[FaultRule, ...] = ()

    @property
    def action(self) -> str:
        return self.rule.action if self.rule is not None else "latency"

    @property
    def catalog(self) -> str | None:
        return self.rule.catalog if self.rule is not None else None

    @property
    def params(self) -> Mapping[str, str]:
        return self.rule.params if self.rule is not None else {}

    @property
    def latency_s(self) -> float:
        own = self.rule.latency_s if self.rule is not None else 0.0
        return own + self.extra_latency_s

    @property
    def retry_after(self) -> int | None:
        return self.rule.retry_after if self.rule is not None else None

    async def delay(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)


@dataclass
class _RuleState:
    rule: FaultRule
    rng: random.Random
    matched: int = 0
    fired: int = 0


class FaultEngine:
    """Thread-safe rule set shared by every fake of one harness."""

    def __init__(self, rules: Iterable[FaultRule | Mapping[str, Any]] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._states: list[_RuleState] = []
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[], None]] = []
        for rule in rules:
            self.add(rule)

    # -- rule set -------------------------------------------------------------------------------------
    def add(self, rule: FaultRule | Mapping[str, Any]) -> FaultRule:
        if not isinstance(rule, FaultRule):
            rule = FaultRule.from_dict(rule)
        with self._lock:
            if not rule.id:
                rule = replace(rule, id=f"f{next(self._ids)}")
            if any(s.rule.id == rule.id for s in self._states):
                raise FaultRuleError(f"a fault rule with id {rule.id!r} exists already")
            self._states.append(_RuleState(rule, self._rng_for(rule.id)))
        self._changed()
        return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._states)
            self._states = [s for s in self._states if s.rule.id != rule_id]
            removed = len(self._states) != before
        if removed:
            self._changed()
        return removed

    def clear(self) -> None:
        with self._lock:
            had = bool(self._states)
            self._states = []
        if had:
            self._changed()

    def replace_all(self, rules: Iterable[FaultRule | Mapping[str, Any]], *, seed: int | None = None) -> None:
        with self._lock:
            self._states = []
            if seed is not None:
                self._seed = seed
        for rule in rules:
            self.add(rule)
        self._changed()

    def reseed(self, seed: int | None = None) -> None:
        """Restart every rule's counters and random stream (same seed = same run again)."""
        with self._lock:
            if seed is not None:
                self._seed = seed
            self._states = [_RuleState(s.rule, self._rng_for(s.rule.id)) for s in self._states]

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [s.rule for s in self._states]

    def stats(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**s.rule.to_dict(), "matched": s.matched, "fired": s.fired} for s in self._states]

    @property
    def seed(self) -> int:
        return self._seed

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def down_services(self) -> dict[str, Literal["refused", "reset"]]:
        """service -> down mode, for the host to close or reset listeners."""
        with self._lock:
            return {s.rule.service: s.rule.down_mode for s in self._states if s.rule.action == "down"}

    # -- matching -------------------------------------------------------------------------------------
    def match(
        self,
        service: str,
        *,
        mailbox: str | None = None,
        recipients: Iterable[str] = (),
        recipient: str | None = None,
        operation: str | None = None,
        base_latency_s: float = 0.0,
    ) -> Fault | None:
        """The fault for this request, or None. Call once per request (or per SMTP command).

        Every latency rule that selects the request fires (counters advance) and the longest of their
        ``latency_s`` applies: overlapping slowness episodes do not stack, and a rule added twice does
        not double its wait. The first other rule that fires is the action (later ones count the match
        but do not fire). ``base_latency_s`` (the service's latency from the scenario limits) is added
        to whatever applies, so a slow service still fails on cue.
        """
        recipient_list = [*recipients, *([recipient] if recipient else [])]
        chosen: FaultRule | None = None
        latency_rules: list[FaultRule] = []
        with self._lock:
            for state in self._states:
                rule = state.rule
                if rule.action == "down":
                    continue
                if not rule.selects(service, mailbox=mailbox, recipients=recipient_list, operation=operation):
                    continue
                state.matched += 1
                if rule.action != "latency" and chosen is not None:
                    continue
                fires = state.matched >= rule.nth and (rule.times is None or state.fired < rule.times)
                if fires and rule.probability is not None:
                    fires = state.rng.random() < rule.probability
                if not fires:
                    continue
                state.fired += 1
                if rule.action == "latency":
                    latency_rules.append(rule)
                else:
                    chosen = rule
        extra = max(0.0, base_latency_s) + max((rule.latency_s for rule in latency_rules), default=0.0)
        if chosen is None and not latency_rules and extra <= 0:
            return None
        return Fault(chosen, extra_latency_s=extra, latency_rules=tuple(latency_rules))

    def _rng_for(self, rule_id: str) -> random.Random:
        return random.Random(f"{self._seed}:{rule_id}")

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()


# -- helpers for the fakes ----------------------------------------------------------------------------


def catalog_http_reply(
    service: str,
    name: str,
    *,
    params: Mapping[str, str] | None = None,
    request_id: str | None = None,
    client_request_id: str | None = None,
    retry_after: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a catalog entry in the shape of ``service`` (graph, entra, msi, keyvault)."""
    import json

    from harness import replies

    fmt = dict(params or {})
    now = dt.datetime.now(dt.UTC)
    headers: dict[str, str] = {}
    if service == "graph":
        status, headers, body = replies.graph_error(
            name,
            request_id=request_id or str(uuid.uuid4()),
            client_request_id=client_request_id or str(uuid.uuid4()),
            date=now.strftime("%Y-%m-%dT%H:%M:%S"),
            retry_after=retry_after,
            **fmt,
        )
        return status, dict(headers), body or b""
    elif service in ("entra", "msi"):
        status, data = replies.entra_error(
            name,
            trace_id=str(uuid.uuid4()),
            correlation_id=client_request_id or str(uuid.uuid4()),
            timestamp=now.strftime("%Y-%m-%d %H:%M:%SZ"),
            **fmt,
        )
        payload = json.dumps(data).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    elif service == "keyvault":
        status, data = replies.keyvault_error(name, **fmt)
        payload = json.dumps(data).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
    else:
        raise FaultRuleError(f"no HTTP reply shape for service {service!r}")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return status, headers, payload


def drop_http_connection(request: Any) -> None:
    """Close an aiohttp request's connection without answering (the client sees a reset / EOF)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def aiohttp_middleware(
    engine: FaultEngine, service: str, *, operation_of: Callable[[Any], str | None] | None = None
):
    """Fault handling for fakes whose faults do not depend on the mail content (entra, msi, keyvault).

    ``drop_after_body`` runs the handler (side effects happen) and then drops the connection.
    """
    from aiohttp import web

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        fault = engine.match(service, operation=operation_of(request) if operation_of else None)
        if fault is None:
            return await handler(request)
        await request.read()
        if fault.action == "latency":
            await fault.delay()
            return await handler(request)
        if fault.action == "drop":
            await fault.delay()
            drop_http_connection(request)
            raise ConnectionDropped
        if fault.action == "drop_after_body":
            await handler(request)
            await fault.delay()
            drop_http_connection(request)
            raise ConnectionDropped
        await fault.delay()
        assert fault.catalog is not None
        status, headers, body = catalog_http_reply(
            service,
            fault.catalog,
            params=fault.params,
            retry_after=fault.retry_after,
            client_request_id=request.headers.get("client-request-id"),
        )
        return web.Response(status=status, headers=headers, body=body)

    return middleware


class ConnectionDropped(Exception):
    """Raised by a handler after it dropped the connection on purpose (the host silences it)."""
