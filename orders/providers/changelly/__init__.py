"""Changelly Fiat API (off-ramp sell orders): signing, status map, API client, adapter.

``signing``: RSA-SHA256 request signatures over the URL as sent plus the body as
sent, and callback signatures over ``{"orderId": ...}`` only. ``client``: the
signed calls (``GET /v1/orders``, ``POST /v1/sell/orders``) and their named
errors. ``adapter``: callbacks as triggers, polls and backfills as the truth,
order creation. Its loopback fake for tests and dev runs is ``devkit.changelly``.
Facts and doc bugs (C-1..C-9): ``docs/providers.md`` section 3.
"""

from orders.providers.base import Provider
from orders.providers.changelly.adapter import ChangellyAdapter
from orders.providers.changelly.settings import ChangellySettings
from orders.providers.changelly.statuses import STATUS_MAP

PROVIDER = Provider(
    slug="changelly", adapter=ChangellyAdapter, status_map=STATUS_MAP, settings=ChangellySettings
)
