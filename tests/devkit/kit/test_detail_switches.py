"""The order-detail faults every sandbox can play, read through the product's own clients.

A proxy in front of a provider answers 429, redirects, or serves an HTML page with a
200; each sandbox plays those on its order-detail API (``DETAIL_SWITCHES``), per order,
and the product's client names each one as the error policy expects: throttled and
unavailable answers are transient, a redirect is refused (never followed), an answer
that is not the provider's JSON is invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import Stack
from scenarios import alixpay_sell, changelly_sell, fuspay_sell

from orders.errors import (
    ProviderRateLimited,
    ProviderRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
    RampwatchError,
)
from orders.service import create_order

REQUESTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "alixpay": alixpay_sell,
    "fuspay": lambda oid: fuspay_sell(oid, partner_callback_url="http://127.0.0.1:9/webhooks/fuspay"),
    "changelly": changelly_sell,
}

EXPECTED: dict[str, type[RampwatchError]] = {
    "detail_fail": ProviderUnavailable,
    "detail_throttle": ProviderRateLimited,
    "detail_redirect": ProviderRejected,
    "detail_garbage": ProviderResponseInvalid,
}


def _sandbox(stack: Stack, provider: str) -> Any:
    return {"alixpay": stack.sandbox, "fuspay": stack.fuspay, "changelly": stack.changelly}[provider]


@pytest.mark.parametrize("provider", sorted(REQUESTS))
def test_each_detail_fault_is_named_by_the_client_and_touches_only_its_order(
    stack: Stack, provider: str
) -> None:
    adapter = stack.runtime.adapters[provider]
    sandbox = _sandbox(stack, provider)
    for oid in ("faulty", "fine"):
        create_order(stack.runtime.store, adapter, REQUESTS[provider](oid))

    def poll(oid: str) -> Any:
        kind, theirs = stack.runtime.store.order_ref(provider, oid) or (None, None)
        return adapter.poll(oid, kind=kind, provider_order_id=theirs)

    for switch, error in EXPECTED.items():
        sandbox.set_switches("faulty", **{switch: True})
        with pytest.raises(error):
            poll("faulty")
        assert poll("fine").external_order_id == "fine"
        sandbox.set_switches("faulty", **{switch: None})
    assert poll("faulty").external_order_id == "faulty"


def test_detail_switches_are_on_off_and_checked(stack: Stack) -> None:
    for sandbox in (stack.sandbox, stack.fuspay, stack.changelly):
        for switch in EXPECTED:
            assert sandbox.switches["global"][switch] is False
            with pytest.raises(ValueError):
                sandbox.set_switches(**{switch: "yes"})
