"""AliX Pay (off-ramp sell orders and cash-outs): signing, status map, settings, API client, adapter.

Facts and doc bugs (A-1..): ``docs/providers.md``, AliX Pay.
"""

from orders.providers.alixpay.adapter import AlixPayAdapter
from orders.providers.alixpay.settings import AlixPaySettings
from orders.providers.alixpay.statuses import STATUS_MAP
from orders.providers.base import Provider

PROVIDER = Provider(slug="alixpay", adapter=AlixPayAdapter, status_map=STATUS_MAP, settings=AlixPaySettings)
