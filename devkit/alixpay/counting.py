"""The AliX sandbox counting the order-detail reads it answers at once: what the poll
batches' tests and ``bench/bench_polls.py`` read to check the bound on requests in flight."""

from __future__ import annotations

import threading
from typing import Any

from devkit.alixpay.sandbox import AlixSandbox


class CountingAlix(AlixSandbox):
    """The AliX sandbox, counting the order-detail reads it is answering at once."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.in_flight = 0
        self.peak = 0
        self.reads = 0
        self._gauge = threading.Lock()

    def reset(self) -> None:
        """Count from here: the peak and the reads so far are forgotten."""
        with self._gauge:
            self.peak = self.reads = 0

    def _api_details(self, raw: bytes) -> Any:
        with self._gauge:
            self.in_flight += 1
            self.reads += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return super()._api_details(raw)
        finally:
            with self._gauge:
                self.in_flight -= 1
