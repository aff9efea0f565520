"""The operator console under ``/console``: server-rendered pages (Jinja, no front-end build,
no JavaScript) over the same readers and repairs as the API and the CLI.

* ``login``: the operator token through a form, a signed cookie, log-out
  (``receiver.console.session`` says how the cookie and the CSRF tokens are made);
* ``pages``: orders (filters, keyset pages, counts by status), stuck orders, one
  order's whole timeline, failed work, activity and queue depths;
* ``actions``: reconcile an order now, resolve an anomaly, requeue dead letters,
  redeliver a notification; each answers with a redirect and a notice (Post/Redirect/Get).

Every request to the console goes through ``_guard``: the console is a 404 page while
``RAMPWATCH_OPS_TOKEN`` is unset; any page but the log-in form redirects there without
the cookie; every POST needs the form's CSRF token. Those checks are this blueprint's
only: the webhooks and the bearer API are not touched. Answers are not cached, not
framed, and under a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, render_template, request, url_for
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from orders.errors import AnomalyNotFound, Conflict, InvalidPayload, OrderNotFound, ProviderDisabled
from receiver import errors
from receiver.console import actions, login, pages, session
from receiver.errors import DATABASE_ERRORS, PollFailed, RateLimited

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
for child in (login.bp, pages.bp, actions.bp):
    bp.register_blueprint(child)

PUBLIC = {"console.login.form", "console.login.submit"}
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
# exception -> title of the console's error page; its status is the API's (``receiver.errors``)
ERROR_PAGES: list[tuple[type[BaseException], str]] = [
    (InvalidPayload, "Bad request"),
    (OrderNotFound, "No such order"),
    (ProviderDisabled, "Provider not configured"),
    (AnomalyNotFound, "No such anomaly"),
    (Conflict, "Conflict"),
    (PollFailed, "The poll failed"),
    (RedisError, "Redis is unavailable"),
    *[(exc, "The database is unavailable or busy") for exc in DATABASE_ERRORS],
]
FIXED_MESSAGES = {503: "A dependency is unavailable; retry in a few seconds."}


@bp.before_request
def _guard() -> Any:
    if not session.ops_token():
        return page_error(
            404, "Console disabled", "The operator console is off: RAMPWATCH_OPS_TOKEN is not set."
        )
    if request.endpoint not in PUBLIC and not session.logged_in():
        if request.method == "GET":
            return redirect(url_for("console.login.form", next=request.full_path.rstrip("?")))
        return redirect(url_for("console.login.form"), code=303)
    if request.method == "POST" and not session.csrf_valid(request.form):
        return page_error(
            400,
            "Form refused",
            "The form had no valid CSRF token (it may be older than your log-in): reload the page and try again.",
        )
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.update(HEADERS)
    session.set_csrf_cookie(resp)
    session.drop_taken_notice(resp)
    return resp


def page_error(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("console/error.html", title=title, message=message), status


def _register_errors() -> None:
    for exc_class, title in ERROR_PAGES:

        def handler(exc: BaseException, title: str = title) -> Any:
            status = errors.status_of(exc)
            return page_error(status, title, FIXED_MESSAGES.get(status) or str(exc))

        bp.register_error_handler(exc_class, handler)

    @bp.errorhandler(RateLimited)
    def _throttled(exc: RateLimited) -> Any:
        body, status = page_error(429, "Too many refused log-ins", str(exc))
        return body, status, {"Retry-After": str(exc.retry_after)}

    @bp.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return page_error(exc.code or 500, exc.name, exc.description or exc.name)


_register_errors()


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"console_csrf_token": session.csrf_token, "console_notice": session.take_notice}


@bp.app_template_filter("console_time")
def _time(value: datetime | str | None) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


@bp.app_template_filter("console_query")
def _query(args: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in args.items() if v not in (None, "")}, doseq=True)


@bp.get("/")
def home() -> Any:
    return redirect(url_for("console.pages.orders"))
