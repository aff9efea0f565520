"""Error reporting: sentry-sdk with its Flask and RQ integrations, when ``SENTRY_DSN`` is set.

``init_error_reporting(settings, component)`` is called once per process: by
``create_app`` for the web, and by the ``worker`` and ``clock`` commands. Nothing
personal or secret leaves the process:

* ``send_default_pii`` left at False (no user, cookies or client address), no local variables
  in stack frames (a job's locals are raw callback bodies), request bodies never read
  (``max_request_body_size="never"``);
* ``before_send`` (``scrub_event``) keeps only harmless request headers (the bearer
  token, cookies and every webhook signature header are dropped), drops request data
  and cookies, drops an RQ job's arguments, and masks e-mails, phones and account
  numbers (``config.logs.mask``) in the message, the exception values, the URL and
  query string, extra data, contexts and breadcrumbs; ``before_breadcrumb`` masks a
  breadcrumb as it is recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from config.logs import mask, mask_data
from config.settings import Settings

log = logging.getLogger("rampwatch.errors")

# The request headers an event may keep (lower case); every other one is dropped.
SAFE_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id", "accept", "host"})


def init_error_reporting(settings: Settings, component: str) -> bool:
    """Turn sentry-sdk on for this process when ``settings.sentry_dsn`` is set; True if on.
    ``component`` (``web``, ``worker``, ``clock``) tags every event."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        integrations=[FlaskIntegration(), RqIntegration()],
        # send_default_pii stays at its default, False (passing it is deprecated in
        # sentry-sdk 2.7x): no user, cookies or client address.
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=0.0,
    )
    sentry_sdk.set_tag("component", component)
    log.info("error reporting on (%s)", component)
    return True


def report(exc: BaseException, **tags: str) -> None:
    """Send ``exc`` to Sentry, tagged (``request_id``, ``provider``) and scrubbed like every
    event, when error reporting is on: for the code no integration sees (the callback
    endpoint is plain WSGI, not Flask)."""
    import sentry_sdk

    if not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            scope.set_tag(name, value)
        sentry_sdk.capture_exception(exc)


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event with personal data and secrets removed or masked (see the module docstring)."""
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers") or {}
        request["headers"] = {k: mask(str(v)) for k, v in headers.items() if k.lower() in SAFE_HEADERS}
        for dropped in ("data", "cookies", "env"):
            request.pop(dropped, None)
        for field in ("url", "query_string"):
            if isinstance(request.get(field), str):
                request[field] = mask(request[field])
    if isinstance(event.get("message"), str):
        event["message"] = mask(event["message"])
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for field in ("message", "formatted"):
            if isinstance(logentry.get(field), str):
                logentry[field] = mask(logentry[field])
        if "params" in logentry:
            logentry["params"] = mask_data(logentry["params"])
    for value in (event.get("exception") or {}).get("values") or []:
        if isinstance(value.get("value"), str):
            value["value"] = mask(value["value"])
        for frame in (value.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    extra = event.get("extra")
    if isinstance(extra, dict):
        job = extra.get("rq-job")
        if isinstance(job, dict):
            job.pop("args", None)
            job.pop("kwargs", None)
        event["extra"] = mask_data(extra)
    if isinstance(event.get("contexts"), dict):
        event["contexts"] = mask_data(event["contexts"])
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    if isinstance(values, list):
        for crumb in values:
            scrub_breadcrumb(crumb)
    event.pop("user", None)
    return event


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    if isinstance(crumb.get("message"), str):
        crumb["message"] = mask(crumb["message"])
    if "data" in crumb:
        crumb["data"] = mask_data(crumb["data"])
    return crumb
