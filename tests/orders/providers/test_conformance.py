"""Every registered provider through the same contract, against its sandbox over real HTTP.

For each provider of the registry: the adapter is a ``ProviderAdapter`` (and a
``CreatingAdapter`` / ``BackfillingAdapter`` where it says so, checked with the
runtime-checkable protocols, never ``hasattr``); it creates an order where it
can, parses a callback signed as the provider signs it (and refuses a forged
one), names the order an unverified callback points at, polls the order, and
backfills where it can; every Event it builds says what it covers, and the
store applies them. A new provider joins this test by joining the registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Stack
from scenarios import alixpay_sell, changelly_sell, fuspay_sell

from orders.errors import SignatureInvalid
from orders.events import ANSWER_SOURCES, COVERABLE, COVERS_ALL, Event
from orders.providers import PROVIDERS
from orders.providers.base import BackfillingAdapter, CreatingAdapter, ProviderAdapter
from orders.providers.changelly import signing as changelly_signing
from orders.providers.jsformat import js_stringify
from orders.service import create_order
from orders.states import Decision


@dataclass(frozen=True)
class Case:
    """How to drive one provider's sandbox: a create request, and a signed callback."""

    request: Callable[[str], dict[str, Any]]
    callback: Callable[[Stack, str], tuple[bytes, dict[str, str]]]
    creates: bool = True
    backfills: bool = False


def _alix_callback(stack: Stack, order_id: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps(stack.sandbox.signed_order(order_id)).encode(), {}


def _fuspay_callback(stack: Stack, order_id: str) -> tuple[bytes, dict[str, str]]:
    return js_stringify(stack.fuspay.signed_event(order_id)).encode(), {}


def _changelly_callback(stack: Stack, order_id: str) -> tuple[bytes, dict[str, str]]:
    theirs = stack.changelly.order(order_id)["orderId"]
    signature = changelly_signing.sign_callback(theirs, stack.changelly._callback_private_key)
    body = json.dumps({"orderId": theirs, "externalOrderId": order_id, "status": "pending"}).encode()
    return body, {"X-Callback-Signature": signature}


CASES: dict[str, Case] = {
    "alixpay": Case(request=alixpay_sell, callback=_alix_callback),
    "fuspay": Case(
        request=lambda oid: fuspay_sell(oid, partner_callback_url="http://127.0.0.1:9/webhooks/fuspay"),
        callback=_fuspay_callback,
    ),
    "changelly": Case(request=changelly_sell, callback=_changelly_callback, backfills=True),
}


def test_every_registered_provider_has_a_case() -> None:
    assert set(CASES) == set(PROVIDERS)


def _check_event(event: Event, adapter: ProviderAdapter, source: str) -> None:
    assert event.provider == adapter.slug and event.source == source
    assert event.covers == tuple(adapter.covers[source])
    assert set(event.covers) <= set(COVERABLE)
    if event.provider_status is not None:
        assert "provider_status" in event.covers
    if source in ANSWER_SOURCES and event.provider_status is not None:
        assert event.fetched_at is not None and event.observed <= event.received
        assert adapter.status_map.lookup(event.provider_status) is not None, event.provider_status
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event  # travels as JSON


@pytest.mark.parametrize("slug", sorted(CASES))
def test_the_adapter_contract(stack: Stack, slug: str) -> None:
    case, entry = CASES[slug], PROVIDERS[slug]
    adapter = stack.runtime.adapters[slug]
    store = stack.runtime.store
    stack.sandbox.callback_url = stack.fuspay.callback_url = stack.changelly.callback_url = None
    assert isinstance(adapter, ProviderAdapter) and isinstance(adapter, entry.adapter)  # type: ignore[arg-type]
    assert adapter.slug == slug and adapter.status_map is entry.status_map
    assert {"callback", "poll"} <= set(adapter.covers)
    assert isinstance(adapter, CreatingAdapter) is case.creates
    assert isinstance(adapter, BackfillingAdapter) is case.backfills
    order_id = f"conf-{slug}"
    started = datetime.now(UTC)

    # create (records CREATED first, then the provider's answer if it gives one)
    request = adapter.validate_create(case.request(order_id))  # type: ignore[attr-defined]
    created = adapter.creation_event(request, started)  # type: ignore[attr-defined]
    _check_event(created, adapter, "create")
    assert created.covers == COVERS_ALL and created.provider_status is None
    outcome = create_order(store, adapter, case.request(order_id))
    assert outcome.event.external_order_id == order_id

    # a callback signed as the provider signs it
    body, headers = case.callback(stack, order_id)
    event = adapter.parse_callback(body, headers, datetime.now(UTC))
    _check_event(event, adapter, "callback")
    assert event.verified_by
    assert adapter.order_hint(body) == order_id
    assert (event.provider_status is None) is adapter.callbacks_are_triggers
    if headers:  # the signature travels in a header
        forged_body, forged_headers = body, {k: v[::-1] for k, v in headers.items()}
    else:  # in the body
        data = json.loads(body)
        data["signature"] = data["signature"][::-1]
        forged_body, forged_headers = js_stringify(data).encode(), {}
    with pytest.raises(SignatureInvalid):
        adapter.parse_callback(forged_body, forged_headers, datetime.now(UTC))

    # a poll: the provider's present, as a verified answer
    kind, theirs = store.order_ref(slug, order_id) or (None, None)
    polled = adapter.poll(order_id, kind=kind, provider_order_id=theirs)
    _check_event(polled, adapter, "poll")
    assert polled.external_order_id == order_id and polled.observed >= started
    (applied,) = store.apply([polled])
    assert applied.decision in (Decision.APPLIED, Decision.CONFIRMED)

    if isinstance(adapter, BackfillingAdapter):
        listed = list(
            adapter.backfill(started - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1))
        )
        for ev in listed:
            _check_event(ev, adapter, "poll")
        assert order_id in {ev.external_order_id for ev in listed}
