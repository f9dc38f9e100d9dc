"""Storage for the CLI: the stores the function uses (shared.storage.build_stores), with the short
retry profile (``StorageOptions.cli``), and what a storage failure means to an operator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.cli.output import CliError, Exit

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Stores


def stores(settings: Settings) -> Stores:
    from shared.storage import StorageOptions, build_stores

    return build_stores(settings, StorageOptions.cli(settings))


def queue_client(settings: Settings, name: str) -> Any:
    from shared.storage import StorageOptions

    return settings.storage.queue_service_client(**StorageOptions.cli(settings).services).get_queue_client(name)


def blob_client(settings: Settings, container: str, name: str) -> Any:
    from shared.storage import StorageOptions

    service = settings.storage.blob_service_client(**StorageOptions.cli(settings).services)
    return service.get_blob_client(container, name)


def storage_failure(exc: Exception, what: str) -> CliError:
    """An Azure storage exception as a CLI error that says where it happened and what to check."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ServiceRequestError):
        return CliError(
            f"{what}: storage is unreachable ({_first_line(exc)}); check AzureWebJobsStorage "
            "(is Azurite running? `python -m harness up` starts it)",
            Exit.FAILED,
        )
    if isinstance(exc, ClientAuthenticationError):
        return CliError(f"{what}: storage refused our credentials ({_first_line(exc)})", Exit.FAILED)
    if isinstance(exc, HttpResponseError):
        return CliError(f"{what}: storage answered {exc.status_code} ({_first_line(exc)})", Exit.FAILED)
    return CliError(f"{what}: {_first_line(exc)}", Exit.FAILED)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
