"""Microsoft's per-mailbox limits, kept by one process running many invocations at once."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.conftest import SENDER, Stack, mail


def test_at_most_four_graph_requests_in_flight_per_mailbox(stack_factory: Callable[..., Stack]) -> None:
    # 12 invocations at once (host.json's batch), one mailbox, a slow Graph: the fake answers 429
    # MailboxConcurrency to a fifth concurrent request, so any excess would show as a 429.
    stack = stack_factory(threads=12, host={"batch_size": 8, "new_batch_threshold": 4})
    stack.harness.apply_scenario({"limits": {"graph": {"latency_ms": 400}}})
    ids = [f"conc-{n}" for n in range(10)]
    for message_id in ids:
        stack.enqueue(mail(id=message_id))
    rows = [stack.wait_state(message_id, "sent", timeout=40) for message_id in ids]
    graph = [r for r in stack.harness.state.requests(service="graph") if "sendMail" in r.operation]
    assert [r.status for r in graph if r.status == 429] == []
    assert len(stack.harness.deliveries(mailbox=SENDER)) == 10
    assert all(row.attempts == 1 for row in rows)  # waiting for a free slot is not an attempt
    # The limit was reached, not avoided by running one at a time: four sends finished together.
    done = sorted(r.time for r in graph)
    assert any(done[i + 3] - done[i] < 0.3 for i in range(len(done) - 3))


def test_attempts_exhausted_poisons_with_the_last_error(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_MAX_ATTEMPTS": "2"})
    stack.harness.set_fault(service="graph", catalog="graph.service_unavailable", operation="sendMail")
    stack.enqueue(mail(id="exhaust-e2e"))
    [env] = stack.poison(timeout=30)
    assert isinstance(env, dict) and env["attempts"] == 2
    assert env["error"]["category"] == "transient" and env["error"]["status"] == 503 and env["error"]["retryable"]
    row = stack.wait_state("exhaust-e2e", "poisoned")
    assert row.attempts == 2 and row.last_category == "transient"
    assert env["firstSeen"] == row.public()["firstSeen"]
    assert stack.harness.deliveries() == []
