"""Request ids: every answer names its request in ``X-Request-ID``, and its log lines too.

The id is the ``X-Request-ID`` a request came with when that is a sane token (Heroku's
router sets one, as do most proxies), else a new one."""

from __future__ import annotations

import random
import re

REQUEST_ID_HEADER = "X-Request-ID"
# A request id we take as given: a short token (a UUID, Heroku's, a proxy's); anything
# else (long, spaces, control characters) is replaced by our own.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")


def request_id(given: str | None) -> str:
    """The id of a request: ``given`` when it is a sane token, else a new one."""
    if given and SANE_REQUEST_ID.fullmatch(given):
        return given
    # 32 hex digits, as a UUID's. An id names a request, it guards nothing: no system call
    # for it (``random`` is reseeded in each forked worker).
    return f"{random.getrandbits(128):032x}"
