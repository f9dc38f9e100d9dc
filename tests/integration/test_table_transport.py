"""The status table over outbox's urllib3 transport (shared/storage/transport.py): the rows a reader sees are
the same as over ``requests``, the SDK's error mapping (ETag, exists, not found) still drives the claim, and
a failure says whether the request was sent, as azure-core's own transports do."""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError, ServiceResponseTimeoutError

from harness.azurite import Azurite
from shared.classify import classify_transport_exception
from shared.settings import load_settings
from shared.storage import StorageOptions, build_stores
from shared.storage.options import table_options
from shared.storage.status import ClaimKind, StatusStore
from shared.storage.transport import Urllib3Transport


def _settings(connection_string: str, **extra: str) -> Any:
    return load_settings({"AzureWebJobsStorage": connection_string, "OUTBOX_QUEUE": "q",
                          "OUTBOX_STATUS_TABLE": f"t{uuid.uuid4().hex[:12]}",
                          "OUTBOX_ALLOWED_SENDERS": "*@contoso.example", **extra})


def _store(settings: Any, **overrides: Any) -> StatusStore:
    options = {**table_options(settings, environ={}), **overrides}
    assert isinstance(options["transport"], Urllib3Transport)
    return StatusStore(settings.storage.table_service_client(**options), settings.status_table)


@pytest.fixture
def store(azurite: Azurite) -> Iterator[StatusStore]:
    made = _store(_settings(azurite.connection_string))
    yield made
    made.close()


def test_a_claim_and_sent_mark_read_back_the_same_row(store: StatusStore) -> None:
    claim = store.claim("id-1", owner="w1", lease_s=60, transport="graph", mailbox="zoë@contoso.example",
                        internet_message_id="<a@contoso.example>", fingerprint="f" * 64)
    assert claim.kind is ClaimKind.CLAIMED and claim.row.etag
    store.mark_sent("id-1", transport="graph", request_ids=["r-1"], previous=claim.row)
    row = store.get("id-1")
    assert row is not None and row.state == "sent" and row.mailbox == "zoë@contoso.example"
    assert row.request_ids == ("r-1",) and row.sent_at is not None
    # The insert's 409 and the ETag's 412 come back as the SDK's typed errors: the claim logic reads them.
    again = store.claim("id-1", owner="w2", lease_s=60, transport="graph", mailbox="zoë@contoso.example",
                        fingerprint="f" * 64)
    assert again.kind is ClaimKind.ALREADY_SENT
    other = store.claim("id-1", owner="w2", lease_s=60, transport="graph", mailbox="zoë@contoso.example",
                        fingerprint="0" * 64)
    assert other.kind is ClaimKind.CONFLICT


def test_two_threads_racing_for_one_row_get_one_claim(store: StatusStore) -> None:
    results: list[ClaimKind] = []
    barrier = threading.Barrier(6)

    def take(n: int) -> None:
        barrier.wait()
        results.append(store.claim("race", owner=f"w{n}", lease_s=60, transport="smtp", mailbox=None).kind)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(ClaimKind.CLAIMED) == 1
    assert results.count(ClaimKind.IN_FLIGHT) == 5


def test_the_function_and_the_cli_use_it_and_a_proxy_keeps_requests(
        azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    settings = _settings(azurite.connection_string)
    assert isinstance(StorageOptions.function(settings).tables["transport"], Urllib3Transport)
    assert isinstance(StorageOptions.cli(settings).tables["transport"], Urllib3Transport)
    assert "transport" not in StorageOptions.function(settings).services  # downloads stream: the SDK's own
    with_proxy = table_options(settings, environ={"HTTPS_PROXY": "http://proxy.contoso.example:3128"})
    assert "transport" not in with_proxy and "use_env_settings" not in with_proxy
    with build_stores(settings, StorageOptions(StorageOptions.function(settings).services,
                                               table_options(settings, environ={}))) as stores:
        assert stores.status.claim("via-build", owner="w", lease_s=5, transport="graph",
                                   mailbox=None).kind is ClaimKind.CLAIMED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _table_at(port: int) -> str:
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


def test_a_closed_port_is_not_sent(azurite: Azurite) -> None:
    store = _store(_settings(_table_at(_free_port())), retry_total=0)
    with pytest.raises(ServiceRequestError) as caught:
        store.claim("x", owner="w", lease_s=5, transport="graph", mailbox=None)
    assert not isinstance(caught.value, ServiceResponseError)
    assert classify_transport_exception(caught.value, transport="storage", request_sent=False).code == "connect_failed"


class _HangUp:
    """Reads a request, then closes without a byte of answer: the request reached the server."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    self.requests += 1

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_an_answer_lost_after_the_request_went_out_says_so() -> None:
    server = _HangUp()
    try:
        store = _store(_settings(_table_at(server.port)), retry_total=0)
        with pytest.raises(ServiceResponseError) as caught:
            store.claim("x", owner="w", lease_s=5, transport="graph", mailbox=None)
        assert server.requests >= 1
        error = classify_transport_exception(caught.value, transport="storage", request_sent=True)
        assert error.code == "connection_lost_after_send"
    finally:
        server.close()


def test_a_stalled_account_times_out_as_maybe_sent(stallable: Azurite) -> None:
    settings = _settings(stallable.connection_string, OUTBOX_STORAGE_TIMEOUT_S="1")
    store = _store(settings, retry_total=0)
    assert store.claim("before", owner="w", lease_s=5, transport="graph", mailbox=None).kind is ClaimKind.CLAIMED
    assert stallable.pid
    os.killpg(stallable.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ServiceResponseTimeoutError) as caught:
            store.claim("during", owner="w", lease_s=5, transport="graph", mailbox=None)
    finally:
        os.killpg(stallable.pid, signal.SIGCONT)
    assert classify_transport_exception(caught.value, transport="storage", request_sent=True).code == \
        "timeout_after_send"
    # Recovered by itself: the pool drops the timed-out connection.
    assert store.claim("after", owner="w", lease_s=5, transport="graph", mailbox=None).kind is ClaimKind.CLAIMED
