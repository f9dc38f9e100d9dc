"""A small client for the harness control API (tests, the CLI, other tools)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from harness.faults import FaultRule
from harness.scenario import Scenario
from harness.state import Delivery


class HarnessClient:
    def __init__(self, base_url: str, *, ca_file: str | Path, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        self._http = httpx.Client(base_url=self.base_url, verify=context, timeout=timeout)

    @classmethod
    def from_state(cls, state_dir: str | Path = ".state") -> HarnessClient:
        """The harness a ``python -m harness up --state DIR`` wrote ``harness.json`` for."""
        info = json.loads((Path(state_dir) / "harness.json").read_text(encoding="utf-8"))
        return cls(info["control"], ca_file=info["caBundle"])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HarnessClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise HarnessControlError(response.status_code, response.text)
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def deliveries(self, *, transport: str | None = None, mailbox: str | None = None) -> list[Delivery]:
        params = {k: v for k, v in (("transport", transport), ("mailbox", mailbox)) if v}
        return [Delivery.from_dict(d) for d in self._call("GET", "/deliveries", params=params)["deliveries"]]

    def deliveries_page(self, *, offset: int = 0, limit: int = 50, transport: str | None = None,
                        mailbox: str | None = None, text: str | None = None) -> dict[str, Any]:
        """One page of delivery summaries, newest first (``GET /deliveries/page``)."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        params.update({k: v for k, v in (("transport", transport), ("mailbox", mailbox), ("q", text)) if v})
        return self._call("GET", "/deliveries/page", params=params)

    def sent_items(self, mailbox: str) -> list[dict[str, Any]]:
        """The mailbox's Sent Items as the fake Graph lists them (``GET /sent-items``)."""
        return self._call("GET", "/sent-items", params={"mailbox": mailbox})["value"]

    def reset(self, *, keep_scenario: bool = False) -> None:
        self._call("POST", "/reset", json={"keepScenario": keep_scenario})

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["faults"]

    def add_fault(self, rule: FaultRule | Mapping[str, Any] | None = None, **fields: Any) -> FaultRule:
        data = rule.to_dict() if isinstance(rule, FaultRule) else dict(rule or {})
        data.update(fields)
        return FaultRule.from_dict(self._call("POST", "/faults", json=data)["faults"][0])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def delete_fault(self, rule_id: str) -> None:
        self._call("DELETE", f"/faults/{rule_id}")

    def rotate_certificate(self, *, keep_old: bool = True) -> dict[str, Any]:
        return self._call("POST", "/keyvault/rotate", json={"keepOld": keep_old})

    def scenario(self) -> Scenario:
        return Scenario.from_dict(self._call("GET", "/scenario"))

    def apply_scenario(
        self, scenario: Scenario | None = None, *, patch: Mapping[str, Any] | None = None
    ) -> Scenario:
        body = {"patch": dict(patch)} if patch is not None else (scenario or self.scenario()).to_dict()
        return Scenario.from_dict(self._call("POST", "/scenario", json=body))

    def requests(self) -> dict[str, dict[str, int]]:
        return self._call("GET", "/requests")["counters"]

    # -- delegated sign-ins -------------------------------------------------------------------------------
    def device_codes(self) -> list[dict[str, Any]]:
        """Pending device codes: ``user_code``, ``client_id``, ``scope``, ``expires_at``..."""
        return self._call("GET", "/devicecodes")["devicecodes"]

    def approve_device_code(self, user_code: str, user: str) -> dict[str, Any]:
        return self._call("POST", "/devicecodes/approve", json={"user_code": user_code, "user": user})

    def decline_device_code(self, user_code: str, user: str) -> dict[str, Any]:
        return self._call("POST", "/devicecodes/decline", json={"user_code": user_code, "user": user})

    def refresh_tokens(self, *, user: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/refresh-tokens", params={"user": user} if user else {})["refresh_tokens"]

    def revoke_refresh_tokens(self, user: str) -> int:
        return int(self._call("POST", "/refresh-tokens/revoke", json={"user": user})["revoked"])

    def age_refresh_tokens(self, user: str, days: float) -> int:
        return int(self._call("POST", "/refresh-tokens/age", json={"user": user, "days": days})["aged"])


class HarnessControlError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"harness control API answered {status}: {body}")
        self.status = status
        self.body = body
