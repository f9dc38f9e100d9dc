"""A small stand-in for the Azure Functions host, for offline runs and tests (Core Tools cannot be
installed everywhere). Production runs on Azure Functions; this host only imitates what outbox relies on:

- settings: ``local.settings.json`` ``Values`` become environment variables of the invocations, as Core
  Tools does (a variable already set in the environment wins; Core Tools says "Skipping ...");
- indexing: the Python worker's rule (``PYTHON_SCRIPT_FILE_NAME`` or ``function_app.py`` in the app root,
  a plain file name that must exist, imported by its stem, exactly one FunctionApp), then
  ``app.get_functions()`` and each function's ``get_function_json()`` for its bindings;
- queue triggers: polling with host.json's ``extensions.queues`` (batchSize, newBatchThreshold,
  maxPollingInterval, visibilityTimeout, maxDequeueCount, messageEncoding); the message is deleted after
  a successful invocation, made visible again after ``visibilityTimeout`` when the invocation raises, and
  moved as it is to ``<queue>-poison`` once it has been dequeued ``maxDequeueCount`` times;
- timer triggers: the NCRONTAB ``schedule`` (``%NAME%`` resolved from the settings, ``harness.ncrontab``),
  ``runOnStartup``; one run at a time per function, as the host's singleton lock gives; and
  ``POST /admin/functions/{name}`` (the host's admin API for running a non-HTTP function, 202) with the key;
- HTTP triggers: route, methods and authLevel from the bindings, under host.json's ``routePrefix``.
  Unlike Core Tools (which does not check keys locally), this host enforces function keys when it has
  one: the ``x-functions-key`` header or the ``code`` query parameter must equal ``OUTBOX_API_KEY`` from
  the settings (or the key given to it / generated and printed at start).

Not imitated: function timeouts, visibility renewal of long invocations, dynamic concurrency, scale-out.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("harness.localhost")

SCRIPT_FILE_SETTING = "PYTHON_SCRIPT_FILE_NAME"
SCRIPT_FILE_DEFAULT = "function_app.py"
# The worker's check on the setting: a plain .py file name, no directories.
SCRIPT_FILE_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py$")
# How long a received message stays invisible while its invocation runs (the real host uses 10 min
# and renews it; invocations here are short, so no renewal).
PROCESSING_VISIBILITY_S = 600
MIN_POLL_S = 0.1


class IndexingError(RuntimeError):
    """The worker would index no functions (or refuse the app): says why, as the worker would."""


# -- settings and host.json ---------------------------------------------------------------------------


def read_local_settings(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def parse_timespan(value: str | float | int | None, default: float) -> float:
    """A .NET TimeSpan as host.json writes it (``hh:mm:ss[.fff]`` or ``d.hh:mm:ss``) in seconds."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    days = 0.0
    m = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not m:
        raise ValueError(f"not a TimeSpan: {value!r}")
    if m.group(1):
        days = float(m.group(1))
    return days * 86400 + int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the Functions defaults for what it leaves out."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout_s: float = 0.0
    max_polling_interval_s: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any]) -> QueueOptions:
        q = ((host.get("extensions") or {}).get("queues")) or {}
        batch = int(q.get("batchSize", 16))
        if not 1 <= batch <= 32:
            raise ValueError(f"host.json extensions.queues.batchSize must be 1..32, got {batch}")
        return cls(
            batch_size=batch,
            new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            visibility_timeout_s=parse_timespan(q.get("visibilityTimeout"), 0.0),
            max_polling_interval_s=parse_timespan(q.get("maxPollingInterval"), 60.0),
            message_encoding=str(q.get("messageEncoding", "base64")).lower(),
        )


# -- indexing: the worker's rule ------------------------------------------------------------------------


def script_file_name(values: Mapping[str, str]) -> str:
    return (values.get(SCRIPT_FILE_SETTING) or "").strip() or SCRIPT_FILE_DEFAULT


def index_app(app_root: str | Path, values: Mapping[str, str]) -> Any:
    """Find the FunctionApp exactly as the Python worker does, or raise IndexingError saying why not."""
    import azure.functions as func

    root = Path(app_root).resolve()
    name = script_file_name(values)
    if not SCRIPT_FILE_PATTERN.match(name):
        raise IndexingError(f"{SCRIPT_FILE_SETTING}={name!r} is not a plain .py file name; the worker rejects it")
    if not (root / name).exists():
        raise IndexingError(
            f"{root / name} does not exist: the worker would silently index no functions "
            f"(set {SCRIPT_FILE_SETTING} to the root file that holds the app, e.g. main.py)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(Path(name).stem)
    found = [getattr(module, n) for n in module.__dir__() if isinstance(getattr(module, n, None), func.FunctionRegister)]
    if not found:
        raise IndexingError(f"Could not find top level function app instances in {name}.")
    if len(found) > 1:
        raise IndexingError(f"More than one {type(found[0]).__name__} or other top level function app instances "
                            "are defined.")
    return found[0]


@dataclass
class Binding:
    name: str
    type: str
    direction: str
    raw: dict[str, Any]


@dataclass
class IndexedFunction:
    name: str
    fn: Callable[..., Any]
    bindings: list[Binding]

    @property
    def trigger(self) -> Binding:
        return next(b for b in self.bindings if b.type.lower().endswith("trigger"))


_INDEXED: dict[int, tuple[Any, list[IndexedFunction]]] = {}


def indexed_functions(app: Any) -> list[IndexedFunction]:
    """The app's functions with their bindings. The worker calls ``get_functions()`` once per process (a
    second call fails its unique-name check), so the result is kept per app object."""
    cached = _INDEXED.get(id(app))
    if cached is not None and cached[0] is app:
        return cached[1]
    out: list[IndexedFunction] = []
    for f in app.get_functions():
        spec = json.loads(f.get_function_json())
        bindings = [Binding(b["name"], b["type"], str(b.get("direction", "")).lower(), b) for b in spec["bindings"]]
        out.append(IndexedFunction(f.get_function_name(), f.get_user_function(), bindings))
    _INDEXED[id(app)] = (app, out)
    return out


def resolve_app_setting(value: str, env: Mapping[str, str]) -> str:
    """``%NAME%`` binding expressions, resolved from app settings like the host does."""
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in env or not env[key]:
            raise IndexingError(f"'%{key}%' does not resolve to a value: set {key} in the app settings")
        return env[key]

    return re.sub(r"%([^%]+)%", sub, value)


# -- storage connections --------------------------------------------------------------------------------


def queue_service_for(connection: str, env: Mapping[str, str]) -> Any:
    from azure.storage.queue import QueueServiceClient

    conn = (env.get(connection) or "").strip()
    if conn:
        return QueueServiceClient.from_connection_string(conn)
    uri = (env.get(f"{connection}__queueServiceUri") or "").strip()
    account = (env.get(f"{connection}__accountName") or "").strip()
    if not uri and account:
        uri = f"https://{account}.queue.core.windows.net"
    if not uri:
        raise IndexingError(f"storage connection {connection!r} is not set (neither {connection} nor "
                            f"{connection}__queueServiceUri)")
    from azure.identity import DefaultAzureCredential

    return QueueServiceClient(uri, credential=DefaultAzureCredential(
        managed_identity_client_id=env.get(f"{connection}__clientId") or None))


# -- the host -------------------------------------------------------------------------------------------


@dataclass
class HostStats:
    invocations: int = 0
    succeeded: int = 0
    failed: int = 0
    moved_to_poison: int = 0
    http_requests: int = 0
    timer_runs: int = 0
    errors: list[str] = field(default_factory=list)


class _TimerListener:
    def __init__(self, host: LocalHost, fn: IndexedFunction, schedule: str, run_on_startup: bool) -> None:
        from harness import ncrontab

        self.host = host
        self.fn = fn
        self.schedule = ncrontab.parse(schedule)
        self.run_on_startup = run_on_startup
        self.requested = threading.Event()
        self.lock = threading.Lock()  # the host's singleton: one run at a time
        self.thread = threading.Thread(target=self._run, name=f"localhost-timer-{fn.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self.requested.set()

    def run_now(self) -> None:
        self.requested.set()

    def _run(self) -> None:
        from harness import ncrontab

        if self.run_on_startup:
            self._invoke()
        while not self.host.stopping.is_set():
            now = dt.datetime.now(dt.UTC)
            due = ncrontab.next_after(self.schedule, now)
            self.requested.wait(max(0.0, (due - now).total_seconds()))
            if self.host.stopping.is_set():
                break
            self.requested.clear()
            self._invoke()

    def _invoke(self) -> None:
        from azure.functions.timer import TimerRequest

        with self.lock:
            try:
                self.host.call(self.fn, TimerRequest(past_due=False))
            except Exception as exc:
                log.error("Executed 'Functions.%s' (Failed): %s", self.fn.name, exc, exc_info=exc)
                with self.host.stats_lock:
                    self.host.stats.errors.append(f"{self.fn.name}: {exc}")
            finally:
                with self.host.stats_lock:
                    self.host.stats.timer_runs += 1
                self.host.activity()


class _QueueListener:
    def __init__(self, host: LocalHost, fn: IndexedFunction, service: Any, queue_name: str) -> None:
        self.host = host
        self.fn = fn
        self.queue_name = queue_name
        self.poison_name = f"{queue_name}-poison"
        self.client = service.get_queue_client(queue_name)
        self.poison_client = service.get_queue_client(self.poison_name)
        self.in_flight = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"localhost-queue-{queue_name}", daemon=True)
        self._warned_missing = False
        self.polls = 0

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _run(self) -> None:
        opts = self.host.queue_options
        delay = MIN_POLL_S
        while not self.host.stopping.is_set():
            with self.cond:
                while self.in_flight > opts.new_batch_threshold and not self.host.stopping.is_set():
                    self.cond.wait(0.5)
            if self.host.stopping.is_set():
                break
            try:
                got = self._receive(opts.batch_size)
            except Exception as exc:  # storage down: keep polling, like the host
                log.warning("polling %s failed: %s", self.queue_name, exc)
                got = []
            if got:
                delay = MIN_POLL_S
                for message in got:
                    self._dispatch(message)
                continue
            delay = min(max(delay * 2, MIN_POLL_S), max(opts.max_polling_interval_s, MIN_POLL_S))
            with self.cond:
                self.cond.wait(delay)

    def _receive(self, count: int) -> list[Any]:
        from azure.core.exceptions import ResourceNotFoundError

        self.polls += 1
        try:
            pages = self.client.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=PROCESSING_VISIBILITY_S
            )
            return list(pages)
        except ResourceNotFoundError:
            if not self._warned_missing:
                log.warning("queue %s does not exist yet; waiting for it", self.queue_name)
                self._warned_missing = True
            return []

    def _dispatch(self, message: Any) -> None:
        opts = self.host.queue_options
        if message.dequeue_count > opts.max_dequeue_count:
            self._move_to_poison(message)
            return
        with self.cond:
            self.in_flight += 1
        self.host.executor.submit(self._invoke, message)

    def _invoke(self, message: Any) -> None:
        import azure.functions as func
        from azure.functions.queue import QueueMessage

        ok = False
        try:
            body = message.content if message.content is not None else ""
            raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            if self.host.queue_options.message_encoding == "base64":
                try:
                    raw = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise ValueError("the message is not base64 but host.json says messageEncoding base64") from exc
            qm = QueueMessage(
                id=message.id,
                body=raw,
                dequeue_count=message.dequeue_count,
                pop_receipt=message.pop_receipt,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
            )
            assert isinstance(qm, func.QueueMessage)
            self.host.call(self.fn, qm)
            ok = True
        except Exception as exc:
            with self.host.stats_lock:
                self.host.stats.failed += 1
                self.host.stats.errors.append(f"{self.fn.name}: {type(exc).__name__}: {exc}")
            log.error("Executed 'Functions.%s' (Failed, Id=%s, dequeueCount=%s): %s", self.fn.name, message.id,
                      message.dequeue_count, exc, exc_info=exc)
        try:
            if ok:
                with self.host.stats_lock:
                    self.host.stats.succeeded += 1
                self.client.delete_message(message.id, message.pop_receipt)
            elif message.dequeue_count >= self.host.queue_options.max_dequeue_count:
                self._move_to_poison(message)
            else:
                self.client.update_message(
                    message.id, message.pop_receipt,
                    visibility_timeout=int(self.host.queue_options.visibility_timeout_s),
                )
        except Exception:
            log.exception("completing message %s failed (it becomes visible again later)", message.id)
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()
            self.host.activity()

    def _move_to_poison(self, message: Any) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.poison_client.create_queue()
        # The host copies the message content as it is: no envelope, no schema.
        self.poison_client.send_message(message.content)
        self.client.delete_message(message.id, message.pop_receipt)
        with self.host.stats_lock:
            self.host.stats.moved_to_poison += 1
        log.warning("Message %s has reached MaxDequeueCount of %s. Moving message to queue '%s'.",
                    message.id, self.host.queue_options.max_dequeue_count, self.poison_name)


@dataclass
class _Route:
    fn: IndexedFunction
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    auth_level: str
    arg: str


def _route_pattern(route: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{[^}]+\})", route.strip("/")):
        m = re.fullmatch(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\?)?\}", piece)
        if m:
            parts.append(f"(?P<{m.group(1)}>[^/]+){'?' if m.group(2) else ''}")
        else:
            parts.append(re.escape(piece))
    return re.compile("^" + "".join(parts) + "$")


class LocalHost:
    """Runs the app's functions against Azurite and a local port. Use as a context manager."""

    def __init__(
        self,
        *,
        app_root: str | Path = ".",
        settings_file: str | Path | None = None,
        values: Mapping[str, str] | None = None,
        host_json: str | Path | Mapping[str, Any] | None = None,
        queue_overrides: Mapping[str, Any] | None = None,
        http_port: int | None = 0,
        http_host: str = "127.0.0.1",
        function_key: str | None = None,
        apply_environment: bool = True,
        thread_count: int | None = None,
    ) -> None:
        self.app_root = Path(app_root).resolve()
        local: dict[str, Any] = {}
        if settings_file is not None:
            local = read_local_settings(settings_file)
        self.values: dict[str, str] = {str(k): "" if v is None else str(v) for k, v in (local.get("Values") or {}).items()}
        if values:
            self.values.update({k: str(v) for k, v in values.items()})
        if isinstance(host_json, Mapping):
            host = dict(host_json)
        else:
            host = json.loads(Path(host_json or self.app_root / "host.json").read_text(encoding="utf-8"))
        self.host_json = host
        opts = QueueOptions.from_host_json(host)
        if queue_overrides:
            opts = replace(opts, **dict(queue_overrides))
        self.queue_options = opts
        self.route_prefix = str(((host.get("extensions") or {}).get("http") or {}).get("routePrefix", "api")).strip("/")
        # None: no HTTP server (queue triggers only); 0: a free port chosen at start.
        self._http_port = http_port
        self.http_host = http_host
        self.function_key = function_key or self.values.get("OUTBOX_API_KEY") or secrets.token_urlsafe(24)
        self.apply_environment = apply_environment
        self.thread_count = thread_count
        self.stats = HostStats()
        self.stats_lock = threading.Lock()
        self.stopping = threading.Event()
        self._executor: ThreadPoolExecutor | None = None  # made by start()
        self.functions: list[IndexedFunction] = []
        self._listeners: list[_QueueListener] = []
        self._timers: dict[str, _TimerListener] = {}
        self._routes: list[_Route] = []
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] = {}
        self._activity = threading.Condition()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker pool the invocations run on (the Functions worker's thread pool)."""
        if self._executor is None:
            raise RuntimeError("the local host is not started")
        return self._executor

    @property
    def env(self) -> dict[str, str]:
        """What the invocations see: the process environment over local.settings.json Values."""
        return {**self.values, **os.environ} if not self.apply_environment else dict(os.environ)

    def start(self) -> LocalHost:
        if self._started:
            return self
        self._apply_env()
        try:
            self._reset_app_runtime()
            app = index_app(self.app_root, self.env)
            self.functions = indexed_functions(app)
            # The Python worker's rule: the app setting, else min(32, cores + 4).
            workers = self.thread_count or int(self.env.get("PYTHON_THREADPOOL_THREAD_COUNT") or 0) or min(
                32, (os.cpu_count() or 1) + 4)
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="localhost-worker")
            env = self.env
            for fn in self.functions:
                trig = fn.trigger
                kind = trig.type.lower()
                if kind == "queuetrigger":
                    queue_name = resolve_app_setting(trig.raw["queueName"], env)
                    service = queue_service_for(trig.raw.get("connection") or "AzureWebJobsStorage", env)
                    self._listeners.append(_QueueListener(self, fn, service, queue_name))
                elif kind == "httptrigger":
                    methods = tuple(m.upper() for m in (trig.raw.get("methods") or ["GET", "POST"]))
                    route = trig.raw.get("route") or fn.name
                    self._routes.append(_Route(fn, methods, _route_pattern(route),
                                               str(trig.raw.get("authLevel", "FUNCTION")).upper(), trig.name))
                elif kind == "timertrigger":
                    schedule = resolve_app_setting(str(trig.raw["schedule"]), env)
                    self._timers[fn.name.lower()] = _TimerListener(self, fn, schedule, bool(trig.raw.get("runOnStartup")))
                else:
                    log.warning("function %s: trigger type %s is not run by the local host", fn.name, trig.type)
            if (self._routes or self._timers) and self._http_port is not None:
                self._start_http()
            for listener in self._listeners:
                listener.start()
            for timer in self._timers.values():
                timer.start()
        except BaseException:
            self._restore_env()
            raise
        self._started = True
        log.info("local host started: %s queue trigger(s), %s timer(s), %s HTTP route(s)%s", len(self._listeners),
                 len(self._timers), len(self._routes), f" at {self.base_url}" if self._server else "")
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self.stopping.set()
        for listener in self._listeners:
            listener.wake()
        for timer in self._timers.values():
            timer.wake()
        for listener in self._listeners:
            listener.thread.join(timeout=10)
        for timer in self._timers.values():
            timer.thread.join(timeout=30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._server_thread:
                self._server_thread.join(timeout=10)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener.client.close()
                listener.poison_client.close()
        self._reset_app_runtime()
        self._restore_env()
        self._started = False

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _apply_env(self) -> None:
        if not self.apply_environment:
            return
        for key, value in self.values.items():
            if os.environ.get(key):
                if os.environ[key] != value:
                    log.info("Skipping '%s' from local settings as it's already defined in current environment "
                             "variables.", key)
                continue
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, old in self._saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved_env.clear()

    def _reset_app_runtime(self) -> None:
        # The app keeps its per-process objects (settings, clients) in a singleton; a new host in the same
        # process must not inherit the previous one's settings.
        module = sys.modules.get("function_app.runtime")
        close = getattr(module, "close_runtime", None) if module else None
        if callable(close):
            close()

    # -- invocation ---------------------------------------------------------------------------------

    def call(self, fn: IndexedFunction, trigger_value: Any) -> Any:
        with self.stats_lock:
            self.stats.invocations += 1
        result = fn.fn(**{fn.trigger.name: trigger_value})
        if inspect.isawaitable(result):
            import asyncio

            result = asyncio.run(_await(result))
        return result

    def activity(self) -> None:
        with self._activity:
            self._activity.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float, poll_s: float = 0.05) -> bool:
        """Wait for ``predicate`` (woken by each finished invocation, re-checked every ``poll_s``)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._activity:
                self._activity.wait(min(poll_s, remaining))

    @property
    def in_flight(self) -> int:
        return sum(listener.in_flight for listener in self._listeners)

    # -- HTTP ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "no HTTP server"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.http_host}:{self.port}"

    def _start_http(self) -> None:
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def _serve(self) -> None:
                host._serve_http(self)

            def __getattr__(self, name: str) -> Any:
                # BaseHTTPRequestHandler answers 501 to any method without a do_<METHOD>; the Functions
                # host answers every method, 405 (with Allow) where the route does not take it.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

        server = ThreadingHTTPServer((self.http_host, self._http_port or 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._server_thread = threading.Thread(target=server.serve_forever, name="localhost-http", daemon=True)
        self._server_thread.start()

    def _serve_http(self, handler: BaseHTTPRequestHandler) -> None:
        import azure.functions as func

        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = parts.path.strip("/")
        prefix = self.route_prefix
        status, payload, headers = 404, b"", {"Content-Type": "text/plain"}
        allowed: list[str] = []
        admin = re.fullmatch(r"admin/functions/([^/]+)", path)
        if admin is not None:
            status = self._admin_run(handler.command.upper(), unquote(admin.group(1)), handler.headers)
        elif not prefix or path == prefix or path.startswith(prefix + "/"):
            rel = path[len(prefix):].strip("/") if prefix else path
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            for route in self._routes:
                m = route.pattern.match(rel)
                if not m:
                    continue
                if handler.command.upper() not in route.methods:
                    status, payload = 405, b""
                    allowed.extend(m for m in route.methods if m not in allowed)
                    headers["Allow"] = ", ".join(allowed)
                    continue
                if route.auth_level != "ANONYMOUS" and not self._key_ok(handler.headers.get("x-functions-key"),
                                                                          query.get("code")):
                    status, payload = 401, b""
                    break
                with self.stats_lock:
                    self.stats.http_requests += 1
                req = func.HttpRequest(
                    method=handler.command.upper(),
                    url=f"http://{handler.headers.get('Host') or f'{self.http_host}:{self.port}'}{handler.path}",
                    headers={k: v for k, v in handler.headers.items()},
                    params=query,
                    # The host hands route values decoded ("%40" is "@"), as ASP.NET routing does.
                    route_params={k: unquote(v) for k, v in m.groupdict().items() if v is not None},
                    body=body,
                )
                try:
                    resp = self.call(route.fn, req)
                    status = int(resp.status_code)
                    payload = resp.get_body() or b""
                    headers = dict(resp.headers.items())
                    if resp.mimetype:
                        charset = f"; charset={resp.charset}" if resp.charset else ""
                        headers["Content-Type"] = f"{resp.mimetype}{charset}"
                except Exception as exc:
                    log.error("Executed 'Functions.%s' (Failed): %s", route.fn.name, exc, exc_info=exc)
                    status, payload = 500, b""
                break
        handler.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def run_timer(self, name: str) -> None:
        """Run a timer function now (what ``POST /admin/functions/{name}`` does)."""
        self._timers[name.lower()].run_now()

    def _admin_run(self, method: str, name: str, headers: Any) -> int:
        """The host's admin API for a non-HTTP function: 202 and the run starts (timers only here)."""
        if method != "POST":
            return 405
        if not self._key_ok(headers.get("x-functions-key"), None):
            return 401
        timer = self._timers.get(name.lower())
        if timer is None:
            return 404
        timer.run_now()
        return 202

    def _key_ok(self, header: str | None, code: str | None) -> bool:
        given = header or code or ""
        return bool(given) and secrets.compare_digest(given, self.function_key)


async def _await(awaitable: Any) -> Any:
    return await awaitable


# -- command line ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness localhost",
                                     description="Run the function app locally against Azurite (no Core Tools).")
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json to read")
    parser.add_argument("--app-root", default=".", help="folder holding host.json and the worker's script file")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port; 0 picks a free one (default: the port of OUTBOX_API_URL, else Host.LocalHttpPort, else 7071)")
    parser.add_argument("--max-polling-interval", type=float, default=None, help="override host.json, seconds")
    parser.add_argument("--visibility-timeout", type=float, default=None, help="override host.json, seconds")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Azure SDKs log every HTTP request at INFO; the Functions host does not show those either.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    overrides: dict[str, Any] = {}
    if args.max_polling_interval is not None:
        overrides["max_polling_interval_s"] = args.max_polling_interval
    if args.visibility_timeout is not None:
        overrides["visibility_timeout_s"] = args.visibility_timeout
    port = args.port
    if port is None:
        local = read_local_settings(args.settings) if Path(args.settings).is_file() else {}
        values = local.get("Values") or {}
        api_url = os.environ.get("OUTBOX_API_URL") or values.get("OUTBOX_API_URL") or ""
        port = urlsplit(api_url).port if api_url else None
        if port is None:
            port = int((local.get("Host") or {}).get("LocalHttpPort") or 7071)
    settings_file = args.settings if Path(args.settings).is_file() else None
    if settings_file is None:
        print(f"warning: {args.settings} not found; using the environment only", file=sys.stderr)
    host = LocalHost(app_root=args.app_root, settings_file=settings_file, queue_overrides=overrides,
                     http_port=port)
    try:
        host.start()
    except IndexingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"local Functions host running; functions: {', '.join(f.name for f in host.functions)}")
    if host._server is not None:
        where = "OUTBOX_API_KEY from the settings" if host.values.get("OUTBOX_API_KEY") else host.function_key
        print(f"HTTP: {host.base_url}/{host.route_prefix}/  (send x-functions-key: {where})")
    print("Ctrl-C (or SIGTERM) stops it.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
