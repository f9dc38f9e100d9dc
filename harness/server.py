"""One asyncio loop in a background thread that serves every fake.

aiohttp apps are served over TLS (the test CA's server certificate); raw protocol servers (the SMTP fake,
which does STARTTLS itself) are served plain. Ports are bound at run time (port 0), so nothing collides.
A service can be taken down (listener closed -> connection refused, or every connection reset) and
brought back on the same port, which is how "service down" faults work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from aiohttp import web

from harness.faults import ConnectionDropped
from harness.state import HarnessState

T = TypeVar("T")
DownMode = Literal["refused", "reset"]
log = logging.getLogger("harness.server")


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int
    tls: bool
    kind: Literal["http", "stream"]

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` for http services, ``HOST:PORT`` for stream (SMTP) services."""
        if self.kind == "http":
            return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass
class _Service:
    name: str
    factory: Callable[[], asyncio.Protocol]
    ssl: ssl.SSLContext | None
    kind: Literal["http", "stream"]
    port: int = 0
    server: asyncio.Server | None = None
    runner: web.AppRunner | None = None
    down: DownMode | None = None
    connections: set[asyncio.Transport] = field(default_factory=set)


class _Resetter(asyncio.Protocol):
    """Accepts, then closes with SO_LINGER 0: the client sees ECONNRESET."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cast(asyncio.Transport, transport).abort()  # a stream server's transports are asyncio.Transport


class _TrackedProtocol(asyncio.Protocol):
    """Delegates to the real protocol and keeps its transport in a set, so stop/down can abort it.

    (aiohttp's RequestHandler has __slots__, so its methods cannot be wrapped in place.)
    """

    def __init__(self, inner: asyncio.Protocol, registry: set[asyncio.Transport]) -> None:
        self._inner = inner
        self._registry = registry
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream server's transports are asyncio.Transport
        self._transport = stream
        for stale in [t for t in self._registry if t.is_closing()]:
            self._registry.discard(stale)
        self._registry.add(stream)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._registry.discard(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@web.middleware
async def _silence_drops(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
):
    try:
        return await handler(request)
    except ConnectionDropped:
        # The fake closed the connection on purpose; nothing will be written to it.
        return web.Response(status=499)


class ServiceHost:
    """Runs fakes on one event loop thread. ``start()`` before adding services; ``stop()`` stops all."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        state: HarnessState | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.state = state
        self._services: dict[str, _Service] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the service host is not started")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ServiceHost:
        if self.running:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run_loop, name="harness-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running or self._loop is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(self._close_all(), timeout=timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ServiceHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the host loop from another thread and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("ServiceHost.run() called from the loop thread: await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run a plain function on the loop thread (to touch loop-owned objects safely)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    # -- services -----------------------------------------------------------------------------------------
    def add_app(
        self, name: str, app: web.Application, *, port: int = 0, tls: bool = True, log_requests: bool = True
    ) -> Endpoint:
        """Serve an aiohttp app over https (http with ``tls=False``) and return its endpoint.
        ``log_requests=False`` keeps its requests out of the request log (a page polling the harness)."""
        if tls and self.ssl_context is None:
            raise RuntimeError("add_app(tls=True) needs the host's ssl_context")
        app.middlewares.insert(0, _silence_drops)
        if self.state is not None and log_requests:
            app.middlewares.insert(0, _request_logger(self.state, name))
        return self.run(self._add_app(name, app, port, tls))

    async def _add_app(self, name: str, app: web.Application, port: int, tls: bool) -> Endpoint:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        assert runner.server is not None
        service = _Service(
            name, runner.server, self.ssl_context if tls else None, "http", port, runner=runner
        )
        return await self._register(service)

    def add_protocol_server(
        self,
        name: str,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Endpoint:
        """Serve a raw asyncio protocol (e.g. ``lambda: aiosmtpd.smtp.SMTP(handler, ...)``)."""
        service = _Service(name, protocol_factory, ssl_context, "stream", port)
        return self.run(self._register(service))

    async def _register(self, service: _Service) -> Endpoint:
        if service.name in self._services:
            raise ValueError(f"a service named {service.name!r} is already registered")
        await self._listen(service)
        self._services[service.name] = service
        return self._endpoint(service)

    async def _listen(self, service: _Service) -> None:
        if service.down == "reset":
            factory: Callable[[], asyncio.Protocol] = _Resetter
            context = None
        else:
            factory = self._tracking(service)
            context = service.ssl
        service.server = await self.loop.create_server(
            factory, self.host, service.port, ssl=context, reuse_address=True, backlog=512
        )
        service.port = service.server.sockets[0].getsockname()[1]

    def _tracking(self, service: _Service) -> Callable[[], asyncio.Protocol]:
        def factory() -> asyncio.Protocol:
            return _TrackedProtocol(service.factory(), service.connections)

        return factory

    def _endpoint(self, service: _Service) -> Endpoint:
        return Endpoint(service.name, self.host, service.port, service.ssl is not None, service.kind)

    def endpoint(self, name: str) -> Endpoint:
        return self._endpoint(self._services[name])

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return {name: self._endpoint(s) for name, s in self._services.items()}

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def set_down(self, name: str, mode: DownMode | None) -> None:
        """Take a service down (``refused``/``reset``) or bring it back (``None``), same port."""
        self.run(self.set_down_async(name, mode))

    async def set_down_async(self, name: str, mode: DownMode | None) -> None:
        service = self._services[name]
        if service.down == mode:
            return
        await self._close_listener(service, abort_connections=mode is not None)
        service.down = mode
        if mode != "refused":
            await self._listen(service)

    def down_services(self) -> dict[str, DownMode]:
        return {name: s.down for name, s in self._services.items() if s.down is not None}

    async def _close_listener(self, service: _Service, *, abort_connections: bool) -> None:
        if service.server is not None:
            service.server.close()
            service.server = None
        if abort_connections:
            for transport in list(service.connections):
                transport.abort()
            service.connections.clear()

    async def _close_all(self) -> None:
        for service in self._services.values():
            await self._close_listener(service, abort_connections=True)
        for service in self._services.values():
            if service.runner is not None:
                with contextlib.suppress(Exception):
                    await service.runner.cleanup()
        self._services.clear()


def _request_logger(state: HarnessState, service: str):
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ):
        route = request.match_info.route.resource
        operation = f"{request.method} {route.canonical if route is not None else request.path}"
        status: int | str = "error"
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            state.record_request(service, operation, "dropped" if status == 499 else status)

    return middleware
