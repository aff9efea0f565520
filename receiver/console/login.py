"""Log-in with the operator token, and log-out (``receiver.console.session`` makes the cookies)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from receiver.console import session

bp = Blueprint("login", __name__)
LIMITER_KEY = "console-login"  # in place of a provider's slug in the limiter's keys
log = logging.getLogger("rampwatch.console")


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a console path of ours, never another site."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.pages.orders")


@bp.get("/login")
def form() -> Any:
    if session.logged_in():
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/login.html", next=request.args.get("next", ""), refused=False)


@bp.post("/login")
def submit() -> Any:
    """Refused log-ins count against the client address's budget of refusals (the
    webhooks' limiter, ``RAMPWATCH_UNVERIFIED_LIMIT`` per ``RAMPWATCH_UNVERIFIED_WINDOW``):
    past it, every log-in from that address is 429 until the window ends."""
    limiter = current_app.extensions["rampwatch.limiter"]
    limiter.check(LIMITER_KEY, request.remote_addr)  # RateLimited: 429
    given = request.form.get("token", "")
    target = request.form.get("next", "")
    if not given or not session.token_matches(given):
        limiter.count(LIMITER_KEY, request.remote_addr)
        log.warning("console log-in refused (%s)", "no token" if not given else "wrong token")
        return render_template("console/login.html", next=target, refused=True), 401
    resp = redirect(_safe_next(target), code=303)
    session.log_in(resp)
    log.info("console log-in")
    return resp


@bp.post("/logout")
def logout() -> Any:
    resp = redirect(url_for("console.login.form"), code=303)
    session.log_out(resp)
    return resp
