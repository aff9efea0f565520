"""The console's log-in and its CSRF tokens: signed cookies, no server-side state.

* **Key.** Everything is signed (itsdangerous, which ships with Flask) with a key
  derived from ``RAMPWATCH_OPS_TOKEN``: HMAC-SHA256 of the token under a fixed label.
  No new setting: rotating the operator token logs every operator out and voids
  every form, which is what a rotation is for.
* **Log-in.** The operator types the operator token; it is compared with the setting
  in constant time (``hmac.compare_digest``). The answer sets ``rampwatch_console``:
  a signed, timestamped value, HttpOnly, SameSite=Strict, ``Path=/console``, Secure
  when the request came over https (directly or, with ``RAMPWATCH_TRUSTED_PROXIES``,
  as the proxy's ``X-Forwarded-Proto`` says), expiring after ``SESSION_AGE`` (the signature's
  age is checked too, so a cookie kept past its expiry is refused). Log-out deletes
  it; being stateless, a copied cookie stays valid until it expires.
* **CSRF.** Every console form carries ``csrf_token``: the signature of a random
  nonce kept in the ``rampwatch_console_csrf`` cookie (HttpOnly, SameSite=Strict,
  ``Path=/console``), under its own salt. A POST to the console without a token,
  with a token of another nonce, a forged or an expired one is refused (400) before
  its view runs. Only the console's blueprint checks it: webhooks and the bearer
  API take no cookies and are not affected. The log-in form is protected the same way,
  and the nonce changes at log-in and log-out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "rampwatch_console"
CSRF_COOKIE = "rampwatch_console_csrf"
COOKIE_PATH = "/console"
SESSION_AGE = 8 * 3600  # seconds: an operator's shift
CSRF_AGE = SESSION_AGE
KEY_LABEL = b"rampwatch console cookies v1"
CSRF_FIELD = "csrf_token"


def ops_token() -> str | None:
    return current_app.extensions["rampwatch"].settings.ops_token


def _serializer(salt: str) -> URLSafeTimedSerializer:
    token = ops_token()
    if not token:
        raise RuntimeError("the console is disabled: RAMPWATCH_OPS_TOKEN is not set")
    key = hmac.new(token.encode(), KEY_LABEL, hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(key, salt=salt)


def token_matches(given: str) -> bool:
    """The operator token, compared in constant time."""
    expected = ops_token() or ""
    return bool(expected) and hmac.compare_digest(given.strip().encode(), expected.encode())


def logged_in() -> bool:
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return False
    try:
        data = _serializer("console.session").loads(value, max_age=SESSION_AGE)
    except BadSignature:  # forged, another token's, or past its age (SignatureExpired)
        return False
    return isinstance(data, dict) and data.get("v") == 1


def _over_https() -> bool:
    """The browser reached us over https: directly, or through the trusted proxies in front
    of us (``RAMPWATCH_TRUSTED_PROXIES``; Heroku's router ends TLS and says so in
    ``X-Forwarded-Proto``, which it sets itself)."""
    if request.is_secure:
        return True
    trusted = current_app.extensions["rampwatch"].settings.trusted_proxies
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    return bool(trusted) and proto == "https"


def _cookie(resp: Response, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=_over_https(),
        httponly=True,
        samesite="Strict",
    )


def log_in(resp: Response) -> None:
    _cookie(resp, SESSION_COOKIE, _serializer("console.session").dumps({"v": 1}), SESSION_AGE)
    new_csrf_nonce(resp)


def log_out(resp: Response) -> None:
    resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
    new_csrf_nonce(resp)


# ------------------------------------------------------------------ CSRF


def _nonce() -> str:
    """This request's CSRF nonce: the cookie's, else a new one the answer sets."""
    if "console_csrf_nonce" not in g:
        given = request.cookies.get(CSRF_COOKIE, "")
        if 16 <= len(given) <= 64 and given.isascii():
            g.console_csrf_nonce = given
        else:
            g.console_csrf_nonce = secrets.token_urlsafe(24)
            g.console_csrf_set = True
    return g.console_csrf_nonce


def new_csrf_nonce(resp: Response) -> None:
    """A fresh nonce (log-in, log-out): tokens of the old one no longer pass."""
    g.console_csrf_nonce = secrets.token_urlsafe(24)
    g.pop("console_csrf_token", None)
    _cookie(resp, CSRF_COOKIE, g.console_csrf_nonce, CSRF_AGE)
    g.console_csrf_set = False


def csrf_token() -> str:
    """The hidden field of every console form (the templates call it)."""
    if "console_csrf_token" not in g:
        g.console_csrf_token = _serializer("console.csrf").dumps(_nonce())
    return g.console_csrf_token


def csrf_valid(form: Any) -> bool:
    """The form's token is a signature of the nonce in this request's cookie, young enough."""
    token = form.get(CSRF_FIELD, "")
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not token or not nonce:
        return False
    try:
        signed = _serializer("console.csrf").loads(token, max_age=CSRF_AGE)
    except BadSignature:
        return False
    return isinstance(signed, str) and hmac.compare_digest(signed.encode(), nonce.encode())


def set_csrf_cookie(resp: Response) -> Response:
    """After a request that made a nonce: give it to the browser."""
    if g.get("console_csrf_set"):
        _cookie(resp, CSRF_COOKIE, g.console_csrf_nonce, CSRF_AGE)
    return resp


# ------------------------------------------------------------------ notices

NOTICE_COOKIE = "rampwatch_console_notice"
NOTICE_AGE = 120  # seconds: the notice is for the page the action redirects to


def notice(resp: Response, text: str, *, error: bool = False) -> Response:
    """Tell the next page what an action did (Post/Redirect/Get): a short signed cookie."""
    value = _serializer("console.notice").dumps({"text": text[:500], "error": error})
    _cookie(resp, NOTICE_COOKIE, value, NOTICE_AGE)
    g.console_notice_set = True
    return resp


def take_notice() -> dict[str, Any] | None:
    """The notice an action left for this page, if any (the answer then deletes it)."""
    value = request.cookies.get(NOTICE_COOKIE)
    if not value or not ops_token():
        return None
    g.console_notice_taken = True
    try:
        data = _serializer("console.notice").loads(value, max_age=NOTICE_AGE)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


def drop_taken_notice(resp: Response) -> None:
    if g.get("console_notice_taken") and not g.get("console_notice_set"):
        resp.delete_cookie(NOTICE_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
