"""Fuspay Axis (Instant Swap): sell (off-ramp) and buy (on-ramp) orders.

``statuses`` places event names in the canonical lifecycle; ``signing`` holds the
SHA-512 recipes (the real one is unpublished, doc bug F-7: a setting, with an
``oracle`` mode); ``client`` calls GetOrder, FetchTransferStatus,
InitiateSellOrder and the signing oracle; ``adapter`` turns callbacks and polls
into Events. Its real HTTP fake for tests and development is ``devkit.fuspay``.
"""

from orders.providers.base import Provider
from orders.providers.fuspay.adapter import FuspayAdapter
from orders.providers.fuspay.settings import FuspaySettings
from orders.providers.fuspay.statuses import STATUS_MAP

PROVIDER = Provider(slug="fuspay", adapter=FuspayAdapter, status_map=STATUS_MAP, settings=FuspaySettings)
