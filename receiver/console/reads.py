"""What the console reads beyond the store (its queries are ``orders.queries``): the RQ
queues' depths, and raw bodies with personal data masked."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from redis import Redis

from config.logs import mask, mask_data

# JSON keys whose values are personal whatever their shape (names cannot be recognised by
# shape, unlike the e-mails, phones and account numbers ``config.logs.mask`` finds).
PERSONAL_KEY = re.compile(
    r"(?i)^(?:(?:first|last|middle|full|given|family|sur|account|holder|customer|payer|payee|"
    r"seller|buyer|bank_?account|card_?holder|beneficiary)_?name|name|e_?mail|.*email|.*phone|"
    r".*account_?(?:number|no)|iban|card(?:_?number)?|birth_?date|date_?of_?birth|dob|address|"
    r"document_?(?:number|id)|passport|national_?id|tax_?id)$"
)
MASKED = "***"


def queue_depths(redis: Redis) -> list[dict[str, Any]]:
    """Each RQ queue's queued, started, scheduled and failed jobs, in a worker's order."""
    from workers.queue import Queues

    out = []
    for q in Queues(redis).all():
        out.append(
            {
                "name": q.name,
                "queued": q.count,
                "started": q.started_job_registry.count,
                "scheduled": q.scheduled_job_registry.count,
                "failed": q.failed_job_registry.count,
            }
        )
    return out


def masked_body(raw: str) -> str:
    """A raw body for the console: personal data masked. JSON is shown indented, values
    under personal keys (names, e-mails, phones, accounts, addresses) replaced and every
    other string masked as the logs mask them (``config.logs.mask``); any other text is
    masked as the logs mask it."""
    try:
        data = json.loads(raw)
    except ValueError:
        return mask(raw)
    return json.dumps(_mask_keys(data), indent=2, ensure_ascii=False, sort_keys=False)


def _mask_keys(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return MASKED
    if isinstance(value, Mapping):
        return {
            k: (_hide(v) if PERSONAL_KEY.match(str(k)) else _mask_keys(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_keys(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**7:
        return mask(str(value))  # an account number sent as a JSON number
    return mask_data(value)


def _hide(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {k: MASKED for k in value}
    if isinstance(value, list):
        return [_hide(v) for v in value]
    return MASKED
