"""Hostile input against a running rampwatch: each case to each webhook, one table of answers.

``python -m devkit.probe http://127.0.0.1:PORT`` (a stack ``make run`` started, or
any rampwatch you may hammer) sends the bad inputs the reliability review found
to every provider's webhook and the API, over real HTTP on loopback, and
prints what each answered: the status and the JSON ``code``. Nothing here is
signed validly: every case must be refused before or at verification, and
none may answer 5xx. The README's reliability section shows its output.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

PROVIDERS = ("alixpay", "fuspay", "changelly")
ID_FIELD = {"alixpay": "externalOrderId", "fuspay": "partner_order_id", "changelly": "orderId"}


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _base(provider: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        ID_FIELD[provider]: "probe-1",
        "event_name": "event.sell.init",
        "type": "sell",
        "status": "SUCCESS",
        "fiatAmount": 1000,
        "signature": "00",
    }
    body.update(extra)
    return body


# name -> (provider -> (body bytes, extra headers))
Case = Callable[[str], tuple[bytes, dict[str, str]]]
CASES: dict[str, Case] = {
    "not JSON": lambda p: (b"<xml/>", {}),
    "JSON nested 1,000 deep": lambda p: (_nested(1000), {}),
    "integer 10^309": lambda p: (json.dumps(_base(p, fiatAmount=10**309)).encode(), {}),
    'lone surrogate "\\ud800"': lambda p: (
        json.dumps(_base(p, **{ID_FIELD[p]: "\ud800"})).encode("utf-8", "surrogatepass"),
        {},
    ),
    "escaped lone surrogate": lambda p: (json.dumps(_base(p, **{ID_FIELD[p]: "a\ud800b"})).encode(), {}),
    "control characters in the id": lambda p: (
        json.dumps(_base(p, **{ID_FIELD[p]: "a\x00b\x1f"})).encode(),
        {},
    ),
    "forged signature": lambda p: (json.dumps(_base(p)).encode(), {"X-Callback-Signature": "Zm9yZ2Vk"}),
    "body over 64 KiB": lambda p: (json.dumps(_base(p, pad="x" * 70_000)).encode(), {}),
    "chunked body over 64 KiB": lambda p: (json.dumps(_base(p, pad="x" * 70_000)).encode(), {"chunked": "1"}),
    "wrong content type": lambda p: (b"{}", {"Content-Type": "text/plain"}),
}


def send(
    base: str, path: str, body: bytes, headers: dict[str, str], *, method: str = "POST", timeout: float = 10.0
) -> tuple[int, str]:
    """Send ``body`` to ``base + path``; (status, JSON code or a short note)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout)
    chunked = headers.pop("chunked", None) is not None
    headers = {"Content-Type": "application/json", **headers}
    try:
        if chunked:
            conn.putrequest(method, path)
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(name, value)
            conn.endheaders()
            for i in range(0, len(body), 8192):
                piece = body[i : i + 8192]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, type(exc).__name__
    finally:
        conn.close()
    try:
        code = json.loads(raw).get("code", "?")
    except (ValueError, AttributeError):
        code = "not JSON"
    return resp.status, str(code)


def table(base: str) -> list[list[str]]:
    rows = [["case", *PROVIDERS]]
    for name, make in CASES.items():
        row = [name]
        for provider in PROVIDERS:
            body, headers = make(provider)
            status, code = send(base, f"/webhooks/{provider}", body, dict(headers))
            row.append(f"{status} {code}")
        rows.append(row)
    long_id = "x" * 9000
    status, code = send(base, f"/api/orders/alixpay/{long_id}", b"", {}, method="GET")
    rows.append(["URL of 9,000 characters", f"{status} {code}", "", ""])
    return rows


def render(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.probe", description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the rampwatch web URL, e.g. http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    rows = table(args.base.rstrip("/"))
    print(render(rows))
    bad = [r for r in rows[1:] if any(c.startswith(("5", "0 ")) for c in r[1:])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
