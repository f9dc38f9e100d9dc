"""Start the whole offline stack: every fake on one TLS service host, plus Azurite.

In-process: ``with Harness.start(Scenario.default(), state_dir) as h: ...``.
Command line: ``python -m harness up [--scenario FILE] [--state DIR] [--env-file PATH] [--copy-settings]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness import control, entra, identity, keyvault
from harness.azurite import Azurite
from harness.client import HarnessClient
from harness.credentials import CertificateStore, VaultVersion
from harness.faults import FaultEngine, FaultRule
from harness.inbox.outbox_side import Values as OutboxValues
from harness.pki import TestPKI
from harness.runtime import HarnessRuntime
from harness.scenario import Scenario
from harness.server import Endpoint, ServiceHost
from harness.state import Delivery, HarnessState
from harness.tokens import TokenIssuer
from shared.settings import SETTINGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Marks a local.settings.json the harness wrote, so it only ever overwrites its own file.
WRITTEN_BY = "outbox-harness"
MAIL_FAKES = ("harness.graph", "harness.smtp")


class Harness:
    """A running harness. Build it with ``Harness.start(...)``; ``stop()`` (or ``with``) ends everything."""

    def __init__(
        self,
        runtime: HarnessRuntime,
        *,
        state_dir: Path,
        identity_endpoint: str,
        identity_header: str,
        azurite: Azurite | None,
        base_scenario: Scenario,
    ) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self.identity_endpoint = identity_endpoint
        self.identity_header = identity_header
        self.azurite = azurite
        self.base_scenario = base_scenario
        self._control: HarnessClient | None = None
        self._inbox_app: Any = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        scenario: Scenario | str | Path | None = None,
        state_dir: str | Path = ".state",
        *,
        with_azurite: bool = False,
        azurite_location: str | Path | None = None,
        with_mail: bool = True,
        extra_server_names: tuple[str, ...] = (),
    ) -> Harness:
        """Start every fake (and Azurite when asked) and write the settings files into ``state_dir``.

        ``with_mail`` imports ``harness.graph`` / ``harness.smtp`` and calls their ``register(runtime)``.
        """
        if scenario is None:
            scenario = Scenario.default()
        elif not isinstance(scenario, Scenario):
            scenario = Scenario.from_file(scenario)
        state = Path(state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        pki = TestPKI.in_directory(state / "pki", extra_names=extra_server_names)
        observations = HarnessState()
        host = ServiceHost(ssl_context=pki.server_ssl_context(), state=observations).start()
        azurite: Azurite | None = None
        try:
            runtime = HarnessRuntime(
                host=host,
                pki=pki,
                tokens=TokenIssuer(),
                state=observations,
                faults=FaultEngine(scenario.faults, seed=scenario.seed),
                _scenario=scenario,
                credentials=CertificateStore.for_scenario(scenario),
                state_dir=state,
            )
            runtime.faults.on_change(runtime.sync_down_services)
            entra.register(runtime)
            _, identity_endpoint, identity_header = identity.register(runtime)
            keyvault.register(runtime)
            if with_mail:
                for module_name in MAIL_FAKES:
                    module = _optional_module(module_name)
                    if module is not None:
                        module.register(runtime)
            control.register(runtime, base_scenario=scenario)
            if with_azurite:
                azurite = Azurite(
                    location=azurite_location, log_file=state / "azurite.log"
                ).start()
            harness = cls(
                runtime,
                state_dir=state,
                identity_endpoint=identity_endpoint,
                identity_header=identity_header,
                azurite=azurite,
                base_scenario=scenario,
            )
            harness.write_files()
            return harness
        except BaseException:
            if azurite is not None:
                azurite.stop()
            host.stop()
            raise

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._control is not None:
            self._control.close()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "harness.json").unlink()
        if self.azurite is not None:
            self.azurite.stop()
        self.runtime.host.stop()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_inbox(self, outbox_values: OutboxValues | None = None) -> str:
        """Serve the inbox page on its own port (once) and return its URL.

        Its outbox side (status rows, poison queue, requeue) reads ``outbox_values`` (outbox's settings),
        by default this harness's own settings when it runs Azurite.
        """
        from harness.inbox import server

        if self._inbox_app is None:
            _, self._inbox_app = server.register(self.runtime, base_scenario=self.base_scenario)
        if outbox_values is None and self.azurite is not None:
            outbox_values = self.settings_values
        self.connect_inbox(outbox_values)
        self.write_files()
        return self.url("inbox")

    def connect_inbox(self, outbox_values: OutboxValues | None) -> None:
        """Point the inbox's outbox side at these settings (None: hide it)."""
        from harness.inbox import server
        from harness.inbox.outbox_side import OutboxSide

        if self._inbox_app is None:
            raise RuntimeError("the inbox is not started: call start_inbox() first")
        server.connect_outbox(self._inbox_app, OutboxSide(outbox_values) if outbox_values is not None else None)

    @property
    def inbox_url(self) -> str | None:
        endpoint = self.endpoints.get("inbox")
        return endpoint.url if endpoint is not None else None

    # -- what the fakes are ---------------------------------------------------------------------------
    @property
    def scenario(self) -> Scenario:
        return self.runtime.scenario

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return self.runtime.endpoints

    def url(self, service: str) -> str:
        return self.runtime.endpoints[service].url

    @property
    def ca_bundle(self) -> Path:
        """Public roots + the test CA: give it to every TLS client (OUTBOX_CA_BUNDLE)."""
        return self.runtime.pki.bundle_path

    @property
    def keyvault_url(self) -> str:
        return self.url("keyvault")

    @property
    def authority(self) -> str:
        """The MSAL authority for the scenario's tenant."""
        return f"{self.url('entra')}/{self.scenario.tenant_id}"

    @property
    def storage_connection_string(self) -> str | None:
        return self.azurite.connection_string if self.azurite else None

    def settings_values(self) -> dict[str, str]:
        """Exactly the ``Values`` of the local.settings.json the harness writes."""
        scenario = self.scenario
        app = scenario.sender
        endpoints = self.endpoints
        bundle = str(self.ca_bundle)
        values: dict[str, str] = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "PYTHON_SCRIPT_FILE_NAME": "main.py",
            "PYTHON_THREADPOOL_THREAD_COUNT": "32",
            "AzureWebJobsStorage": self.storage_connection_string or "UseDevelopmentStorage=true",
            "OUTBOX_QUEUE": "outbox",
            "OUTBOX_TENANT_ID": scenario.tenant_id,
            "OUTBOX_CLIENT_ID": app.client_id,
            "OUTBOX_KEYVAULT_URL": endpoints["keyvault"].url,
            "OUTBOX_CERT_NAME": scenario.keyvault.certificate_name,
            "OUTBOX_TRANSPORT": "graph",
            "OUTBOX_ALLOWED_SENDERS": f"*@{scenario.tenant_domain}",
            "OUTBOX_AUTHORITY_HOST": endpoints["entra"].url,
            "OUTBOX_CA_BUNDLE": bundle,
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
            "AZURE_CLIENT_ID": scenario.managed_identity.client_id,
            "REQUESTS_CA_BUNDLE": bundle,
            "SSL_CERT_FILE": bundle,
        }
        if "graph" in endpoints:
            values["OUTBOX_GRAPH_URL"] = endpoints["graph"].url
        if "smtp" in endpoints:
            values["OUTBOX_SMTP_HOST"] = endpoints["smtp"].host
            values["OUTBOX_SMTP_PORT"] = str(endpoints["smtp"].port)
        # The rest of the function's settings with their defaults: the files show everything the function
        # reads (design.md: the local host and the CLI see exactly what the function sees).
        for name, spec in SETTINGS.items():
            if spec.scope == "function" and spec.default is not None:
                values.setdefault(name, spec.default)
        values.update(scenario.settings)
        return values

    def environment(self) -> dict[str, str]:
        """settings_values() as a process environment would carry them (for subprocesses)."""
        return dict(self.settings_values())

    def write_files(self, *, env_file: str | Path | None = None, copy_settings: bool = False) -> dict[str, Path]:
        values = self.settings_values()
        settings = {"IsEncrypted": False, "Values": values, "WrittenBy": WRITTEN_BY}
        written: dict[str, Path] = {}
        path = self.state_dir / "local.settings.json"
        path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        written["local_settings"] = path
        env_text = "".join(f"{key}={_env_quote(value)}\n" for key, value in values.items())
        written["env"] = self.state_dir / "outbox.env"
        written["env"].write_text(env_text, encoding="utf-8")
        if env_file is not None:
            Path(env_file).write_text(env_text, encoding="utf-8")
            written["env_file"] = Path(env_file)
        if copy_settings:
            written["project_settings"] = copy_settings_to(PROJECT_ROOT / "local.settings.json", settings)
        info = {
            "pid": os.getpid(),
            "control": self.url("control"),
            "inbox": self.inbox_url,
            "caBundle": str(self.ca_bundle),
            "stateDir": str(self.state_dir),
            "scenario": self.scenario.name,
            "endpoints": {name: e.url for name, e in self.endpoints.items()},
            "identityEndpoint": self.identity_endpoint,
            "keyvaultResource": self.runtime.keyvault_resource,
            "storage": self.storage_connection_string,
            "azuritePid": self.azurite.pid if self.azurite else None,
            "settings": str(path),
        }
        info_path = self.state_dir / "harness.json"
        tmp = info_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tmp.replace(info_path)  # readers never see a half-written file
        written["info"] = info_path
        return written

    # -- test helpers -----------------------------------------------------------------------------------
    @property
    def control(self) -> HarnessClient:
        if self._control is None:
            self._control = HarnessClient(self.url("control"), ca_file=self.ca_bundle)
        return self._control

    @property
    def state(self) -> HarnessState:
        return self.runtime.state

    def deliveries(self, *, transport: str | None = None, mailbox: str | None = None) -> list[Delivery]:
        return self.runtime.state.deliveries(transport=transport, mailbox=mailbox)

    def wait_for_deliveries(self, count: int, *, timeout: float = 10.0, **filters: Any) -> list[Delivery]:
        return self.runtime.state.wait_for_deliveries(count, timeout=timeout, **filters)

    def set_fault(self, rule: FaultRule | Mapping[str, Any] | None = None, **fields: Any) -> FaultRule:
        data = rule.to_dict() if isinstance(rule, FaultRule) else dict(rule or {})
        data.update(fields)
        return self.runtime.faults.add(data)

    def clear_faults(self) -> None:
        self.runtime.faults.clear()

    def rotate_certificate(self, *, keep_old: bool = True) -> VaultVersion:
        return keyvault.rotate(self.runtime, keep_old=keep_old)

    def apply_scenario(self, scenario: Scenario | Mapping[str, Any]) -> Scenario:
        """Switch scenario while running (a Scenario, or a TOML-shaped patch of the current one)."""
        new = scenario if isinstance(scenario, Scenario) else self.scenario.with_changes(scenario)
        self.runtime.set_scenario(new)
        self.write_files()
        return new

    def reset(self) -> None:
        """Deliveries, requests, faults and limiter state back to the start (and the starting scenario)."""
        self.runtime.reset(self.base_scenario)

    def mint_token(self, resource: str = "graph", **overrides: Any) -> str:
        """A token as Entra would issue it to the sending app (tests of the resource fakes)."""
        from harness.entra import resources

        scenario = self.scenario
        app = scenario.sender
        table = resources(self.runtime)
        uri = {"graph": "https://graph.microsoft.com", "exchange": "https://outlook.office365.com"}.get(
            resource, self.runtime.keyvault_resource if resource == "keyvault" else resource
        )
        kind = table[uri.lower()].name
        roles = app.consented_graph_roles if kind == "graph" else app.consented_exchange_roles if kind == "exchange" else ()
        kwargs: dict[str, Any] = {
            "tenant_id": scenario.tenant_id,
            "client_id": app.client_id,
            "object_id": app.service_principal_id,
            "audience": uri,
            "roles": roles,
            "lifetime_s": scenario.token_lifetime_s,
        }
        kwargs.update(overrides)
        return self.runtime.tokens.mint(**kwargs).token


# What the Functions platform sets for a managed identity; DefaultAzureCredential reads them.
IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID")


@contextlib.contextmanager
def identity_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Put the harness's managed-identity variables in this process's environment for the block, then
    restore what was there (in-process tests and benchmarks; the function gets them from its settings)."""
    saved = {name: os.environ.get(name) for name in IDENTITY_VARIABLES}
    os.environ.update({name: values[name] for name in IDENTITY_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _env_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_./:@*,=+" for c in value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def copy_settings_to(target: Path, settings: Mapping[str, Any]) -> Path:
    """Write local.settings.json at ``target`` unless a file there was not written by the harness."""
    if target.exists():
        try:
            existing = json.loads(target.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            existing = {}
        if not isinstance(existing, dict) or existing.get("WrittenBy") != WRITTEN_BY:
            raise SettingsConflict(
                f"{target} exists and was not written by the harness: not overwriting it "
                "(move it away, or use the state folder's copy with --settings)"
            )
    target.write_text(json.dumps(dict(settings), indent=2) + "\n", encoding="utf-8")
    return target


class SettingsConflict(RuntimeError):
    pass


# -- command line ---------------------------------------------------------------------------------------


def _print_table(harness: Harness, out: Any) -> None:
    rows = [(name, endpoint.url) for name, endpoint in harness.endpoints.items()]
    rows.append(("identity endpoint", harness.identity_endpoint))
    rows.append(("keyvault resource", harness.runtime.keyvault_resource))
    if harness.azurite is not None:
        a = harness.azurite
        rows.append(("azurite", f"blob {a.blob_port}, queue {a.queue_port}, table {a.table_port}"))
    rows.append(("settings", str(harness.state_dir / "local.settings.json")))
    rows.append(("CA bundle", str(harness.ca_bundle)))
    width = max(len(name) for name, _ in rows)
    print(f"outbox harness up (scenario {harness.scenario.name!r}, tenant {harness.scenario.tenant_id})", file=out)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}", file=out)
    print("Ctrl-C or SIGTERM stops everything.", file=out, flush=True)


def up_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness up", description="Start the offline harness.")
    parser.add_argument("--scenario", help="scenario TOML file (default: the bundled happy-path tenant)")
    parser.add_argument("--state", default=".state", help="state folder for certificates and settings (.state)")
    parser.add_argument("--env-file", help="also write KEY=VALUE settings to this file")
    parser.add_argument("--copy-settings", action="store_true",
                        help="copy local.settings.json to the project root (never over a file the harness did not write)")
    parser.add_argument("--no-azurite", action="store_true", help="do not start Azurite")
    parser.add_argument("--azurite-location", help="persist Azurite data in this folder (default: in memory)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        harness = Harness.start(
            args.scenario, args.state, with_azurite=not args.no_azurite, azurite_location=args.azurite_location
        )
    except Exception as exc:  # the message is for a person at a terminal
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    try:
        harness.start_inbox()
        harness.write_files(env_file=args.env_file, copy_settings=args.copy_settings)
        _print_table(harness, sys.stdout)
        stop.wait()
    except SettingsConflict as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    finally:
        harness.stop()
    print("harness stopped.", flush=True)
    return 0
