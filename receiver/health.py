"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: Redis
answers, and the database answers at the newest schema of this release).

A ``rediss://`` certificate that does not verify is reported as such, naming the
setting that accepts a hosted Redis's self-signed certificate. The database is
checked through the read-only engine (``orders.db.reading``): a write lock held
elsewhere does not hold the probe, and a database that does not answer within
the web tier's bound is reported unavailable (503), never waited on longer.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from orders.migrate import current_revisions
from receiver.errors import RETRY_AFTER
from workers.queue import tls_verify_failure

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    deps = current_app.extensions["rampwatch"]
    checks: dict[str, str] = {}
    try:
        deps.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = tls_verify_failure(exc) or f"unavailable ({type(exc).__name__})"
    try:
        with current_app.extensions["rampwatch.reader"].engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
            revisions = current_app.extensions["rampwatch.revisions"]
            checks["schema"] = revisions.report(current_revisions(conn))
    except SQLAlchemyError as exc:
        checks["database"] = f"unavailable ({type(exc).__name__})"
        checks.setdefault("schema", "unknown (database unavailable)")
    ready = all(v == "ok" for v in checks.values())
    resp = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    if not ready:
        resp.status_code = 503
        resp.headers["Retry-After"] = str(RETRY_AFTER)
    return resp
