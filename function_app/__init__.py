"""The Azure Functions entry (Python v2 programming model): triggers only, thin.

The worker finds this app through the root file ``main.py`` (app setting ``PYTHON_SCRIPT_FILE_NAME=main.py``,
set in local.settings.example.json and in the Bicep app settings): a package folder alone is never
indexed. Everything heavy (settings, storage clients, MSAL, transports) is imported on the first
invocation, not at import, so indexing and cold start stay cheap (``import function_app`` <= 250 ms).
"""

from __future__ import annotations

import logging
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _warn_if_no_sender_is_allowed() -> None:
    """design.md: an empty allow-list allows nobody, "and the function says so at start". The worker
    imports this module when the host starts, long before the first message builds the settings, so
    the (cheap) check runs here; the settings loader still validates the patterns themselves."""
    if not any(part.strip() for part in os.environ.get("OUTBOX_ALLOWED_SENDERS", "").split(",")):
        logging.getLogger("outbox").warning(
            "OUTBOX_ALLOWED_SENDERS is empty: no sender is allowed, every message will be poisoned as "
            "invalid_message. Set it to the sending mailboxes (addresses or *@domain)."
        )


_warn_if_no_sender_is_allowed()


@app.function_name(name="outbox_queue")
@app.queue_trigger(arg_name="msg", queue_name="%OUTBOX_QUEUE%", connection="AzureWebJobsStorage")
def outbox_queue(msg: func.QueueMessage) -> None:
    """One queue message -> sent, retried later, or poisoned. Raises only when storage writes fail,
    so that the host redelivers the message instead of losing it."""
    from function_app.runtime import pipeline

    pipeline().handle_queue_message(
        msg.get_body(), queue_message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1
    )


@app.function_name(name="send")
@app.route(route="send", methods=["POST"])
def send(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/send?mode=queue|now``: enqueue (202) or send at once (the result or the error)."""
    from function_app.http_api import handle_send

    return handle_send(req)


@app.function_name(name="message_status")
@app.route(route="messages/{id}", methods=["GET"])
def message_status(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/messages/{id}``: the status row of one message."""
    from function_app.http_api import handle_status

    return handle_status(req)


@app.function_name(name="signin_keepalive")
@app.timer_trigger(arg_name="timer", schedule="%OUTBOX_KEEPALIVE_SCHEDULE%", run_on_startup=False)
def signin_keepalive(timer: func.TimerRequest) -> None:
    """Use every stored delegated sign-in's refresh token once (daily by default), so none reaches
    Entra's 90-day inactivity limit; one ``outbox.keepalive`` event per account."""
    from function_app.runtime import keepalive

    keepalive()
