"""Azurite (queue + table + blob) on free ports, started from the project's node_modules."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for servers that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


class Azurite:
    """``Azurite(location=None).start()``: in-memory unless ``location`` is a folder to persist into."""

    def __init__(
        self,
        *,
        location: str | Path | None = None,
        host: str = "127.0.0.1",
        executable: str | Path | None = None,
        log_file: str | Path | None = None,
    ) -> None:
        self.host = host
        self.location = Path(location) if location else None
        self.executable = Path(executable) if executable else PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        self.log_file = Path(log_file) if log_file else None
        self.blob_port = self.queue_port = self.table_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def connection_string(self) -> str:
        if self._process is None:
            raise AzuriteError("Azurite is not running")
        return connection_string(self.host, self.blob_port, self.queue_port, self.table_port)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> Azurite:
        if not self.executable.exists():
            raise AzuriteError(
                f"Azurite is not installed ({self.executable} is missing): run `make setup` "
                "(npm ci installs it into node_modules)"
            )
        self.blob_port, self.queue_port, self.table_port = (free_port(self.host) for _ in range(3))
        args = [
            str(self.executable),
            "--blobHost", self.host, "--blobPort", str(self.blob_port),
            "--queueHost", self.host, "--queuePort", str(self.queue_port),
            "--tableHost", self.host, "--tablePort", str(self.table_port),
            "--skipApiVersionCheck", "--disableTelemetry", "--loose",
        ]  # fmt: skip
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        else:
            args += ["--inMemoryPersistence"]
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            log: IO[bytes] = open(self.log_file, "wb")  # noqa: SIM115 - lives as long as the process
        else:
            log = tempfile.TemporaryFile()  # noqa: SIM115
        self._log_handle = log
        self._process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=str(self.location or PROJECT_ROOT),
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {self.blob_port, self.queue_port, self.table_port}
        while pending:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AzuriteError(f"Azurite exited with {self._process.returncode}: {self._log_tail()}")
            for port in list(pending):
                with contextlib.suppress(OSError), socket.create_connection((self.host, port), timeout=0.2):
                    pending.discard(port)
            if pending:
                if time.monotonic() > deadline:
                    raise AzuriteError(f"Azurite did not open ports {sorted(pending)} in {timeout} s: {self._log_tail()}")
                time.sleep(0.05)  # polling for the ports to open, not a fixed wait

    def _log_tail(self) -> str:
        handle = self._log_handle
        try:
            if handle is None:
                return ""
            handle.flush()
            handle.seek(0)
            return handle.read()[-2000:].decode(errors="replace")
        except (OSError, ValueError, AttributeError):
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self._log_handle is not None:
            with contextlib.suppress(Exception):
                self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
