"""Storage clients for the CLI: the same QueueStore the function uses, with a short retry policy.

The SDK's default retry takes ~86 s to give up on a closed port; an operator at a terminal wants to
hear about a wrong connection string in seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.cli.output import CliError, Exit

if TYPE_CHECKING:
    from shared.queues import QueueStore
    from shared.settings import Settings

# Queue and blob clients use the storage SDK's ExponentialRetry (default first wait 15 s); tables use
# azure-core's retry arguments.
CLI_RETRY: dict[str, Any] = {"retry_total": 2, "initial_backoff": 0.2, "increment_base": 1, "random_jitter_range": 0.2}
TABLE_RETRY: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}


def queue_store(settings: Settings, *, queue_service: Any = None) -> QueueStore:
    from shared.queues import QueueStore

    return QueueStore(
        queue_service or settings.storage.queue_service_client(**CLI_RETRY),
        queue=settings.queue,
        poison_queue=settings.poison_queue,
        blob_service=settings.storage.blob_service_client(**CLI_RETRY),
        container=settings.attachments_container,
    )


def queue_client(settings: Settings, name: str) -> Any:
    return settings.storage.queue_service_client(**CLI_RETRY).get_queue_client(name)


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
