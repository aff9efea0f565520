"""The marshmallow schemas of ``/api``: what a request may carry (query parameters,
headers, bodies) and what an answer holds. Built once, at import, as classes.

The same classes validate requests (``load_query``, ``load_headers``, ``load_body``)
and describe them in ``/api/openapi.json`` (``receiver.openapi``), so the
documentation and the validation cannot drift apart; the answers' schemas are
checked against real answers in ``tests/receiver/test_openapi.py``.

A bad value is a 400 naming the parameter (``invalid_parameter``, ``fields``), an
unknown parameter too: a misspelt filter must not silently list everything.

Cursors are opaque to clients: base64url of ``<list>:<id>``, so a cursor of one
list is refused by another.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from orders.errors import InvalidPayload
from orders.plan import AnomalyKind
from orders.providers import PROVIDERS
from orders.states import Status
from receiver.errors import InvalidParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_COMMENT = 2000
MAX_IDEMPOTENCY_KEY = 200  # the column's width

STATUSES = [s.value for s in Status]
ANOMALY_KINDS = sorted(v for k, v in vars(AnomalyKind).items() if k.isupper() and isinstance(v, str))


# ------------------------------------------------------------------ fields


def encode_cursor(kind: str, ident: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{ident}".encode()).decode("ascii").rstrip("=")


class Cursor(fields.String):
    """An opaque position in one list (``kind``): loads to the id it stands for."""

    def __init__(self, kind: str, **kwargs: Any):
        self.kind = kind
        kwargs.setdefault("metadata", {}).setdefault(
            "description", f"an opaque cursor from a previous page of this list ({kind})"
        )
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> int:
        text = super()._deserialize(value, attr, data, **kw)
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValidationError("Not a cursor of this list.") from None
        kind, _, ident = raw.partition(":")
        if kind != self.kind or not ident.isdigit() or len(ident) > 18:
            raise ValidationError("Not a cursor of this list.")
        return int(ident)


DURATION = re.compile(r"\A(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?\Z")


class Duration(fields.String):
    """``90s``, ``15m``, ``2h``, ``3d``, or a sum such as ``1h30m``: loads to a timedelta."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any
    ) -> timedelta:
        text = super()._deserialize(value, attr, data, **kw)
        match = DURATION.match(text)
        if not text or match is None:
            raise ValidationError("Not a duration: use 90s, 15m, 2h, 3d or a sum such as 1h30m.")
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class Time(fields.AwareDateTime):
    """An ISO 8601 time with its offset (``2026-11-01T08:00:00Z``). An unencoded ``+``
    in a query string arrives as a space: it is read as the ``+`` it was."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(" ", "+")
        return super()._deserialize(value, attr, data, **kw)


class StatusName(fields.String):
    """A canonical status, in any case."""

    def __init__(self, **kwargs: Any):
        super().__init__(validate=validate.OneOf(STATUSES), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        return super()._deserialize(value, attr, data, **kw).upper()


def _limit() -> fields.Integer:
    return fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(1, MAX_LIMIT),
        metadata={"description": f"page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"},
    )


def _provider(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(sorted(PROVIDERS)), **kwargs)


def _not_blank(text: str) -> None:
    if not text.strip():
        raise ValidationError("Must not be blank.")


# ------------------------------------------------------------------ requests


class ShowOrderQuery(Schema):
    class Meta:
        unknown = RAISE

    raw = fields.Boolean(
        load_default=False,
        metadata={"description": "add each event's raw body (personal data): operator only"},
    )


class OrderListQuery(Schema):
    class Meta:
        unknown = RAISE

    provider = _provider(metadata={"description": "only this provider's orders"})
    status = fields.List(
        StatusName(),
        metadata={"description": "canonical statuses; repeat the parameter or separate with commas"},
    )
    updated_since = Time(metadata={"description": "changed at or after this time (ISO 8601 with offset)"})
    open_longer_than = Duration(metadata={"description": "not finished, and created longer ago than this"})
    stuck = fields.Boolean(metadata={"description": "flagged stuck (true) or not (false)"})
    has_open_anomalies = fields.Boolean(
        metadata={"description": "with (true) or without (false) open anomalies"}
    )
    cursor = Cursor("orders")
    limit = _limit()


class AnomalyListQuery(Schema):
    class Meta:
        unknown = RAISE

    state = fields.String(
        load_default="all",
        validate=validate.OneOf(["open", "resolved", "all"]),
        metadata={"description": "open, resolved or all (default)"},
    )
    kind = fields.String(validate=validate.OneOf(ANOMALY_KINDS))
    provider = _provider()
    cursor = Cursor("anomalies")
    limit = _limit()


class EventsQuery(Schema):
    class Meta:
        unknown = RAISE

    after = Cursor(
        "events", metadata={"description": "the `next` of the previous page; absent: from the start"}
    )
    limit = _limit()


class ReconcileQuery(Schema):
    class Meta:
        unknown = RAISE

    wait = fields.Boolean(
        load_default=False,
        metadata={"description": "wait (at most 15 s) for the poll and answer with its outcome"},
    )


class CreateHeaders(Schema):
    class Meta:
        unknown = EXCLUDE  # every other header of the request

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=[
            validate.Length(1, MAX_IDEMPOTENCY_KEY),
            validate.Regexp(r"^[!-~]+$", error="Printable ASCII without spaces."),
        ],
        metadata={"description": "the same key repeats the first request's result instead of creating again"},
    )


class CreateOrderBody(Schema):
    """The provider's own creation request (``docs/providers.md``): validated by its adapter."""

    class Meta:
        unknown = EXCLUDE


class ResolveBody(Schema):
    class Meta:
        unknown = RAISE

    comment = fields.String(
        required=True,
        validate=[validate.Length(1, MAX_COMMENT), _not_blank],
        metadata={"description": f"why it is resolved (1 to {MAX_COMMENT} characters)"},
    )


# ------------------------------------------------------------------ answers


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "what went wrong, for a person"})
    code = fields.String(required=True, metadata={"description": "what went wrong, for a program"})
    fields_ = fields.List(fields.String(), data_key="fields", metadata={"description": "the fields at fault"})


class AmountsSchema(Schema):
    fiat_amount = fields.String(allow_none=True)
    fiat_currency = fields.String(allow_none=True)
    crypto_amount = fields.String(allow_none=True)
    crypto_currency = fields.String(allow_none=True)


class TimelineEntrySchema(Schema):
    id = fields.Integer()
    source = fields.String(metadata={"description": "callback, poll, create, manual or replay"})
    provider_status = fields.String(allow_none=True)
    canonical_status = fields.String(allow_none=True)
    decision = fields.String()
    from_ = fields.String(data_key="from")
    to = fields.String()
    version = fields.Integer()
    verified_by = fields.String(allow_none=True)
    covers = fields.List(fields.String())
    claimed_status = fields.String(allow_none=True, metadata={"description": "unsigned; never applied"})
    fiat_amount = fields.String(allow_none=True)
    received_at = fields.DateTime(allow_none=True)
    observed_at = fields.DateTime(allow_none=True)
    recorded_at = fields.DateTime(allow_none=True)
    seen = fields.Integer()
    last_seen_at = fields.DateTime(allow_none=True)
    raw_body = fields.String(metadata={"description": "with ?raw=1 only (operator token)"})


class AnomalySchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    detail = fields.Dict()
    event_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    resolved_at = fields.DateTime(allow_none=True)
    resolution = fields.String(allow_none=True, metadata={"description": "the operator's comment"})


class AnomalyItemSchema(AnomalySchema):
    provider = fields.String()
    external_order_id = fields.String()


class OrderHeadSchema(Schema):
    """What the order view and a list's row share: where the order stands, and whether it is stuck."""

    provider = fields.String()
    external_order_id = fields.String()
    provider_order_id = fields.String(allow_none=True)
    kind = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "canonical status"})
    provider_status = fields.String(allow_none=True)
    version = fields.Integer()
    amounts = fields.Nested(AmountsSchema)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    terminal_at = fields.DateTime(allow_none=True)
    stuck_at = fields.DateTime(allow_none=True)
    stuck_reason = fields.String(allow_none=True)


class OrderSummarySchema(OrderHeadSchema):
    open_anomalies = fields.Integer()


class OrderViewSchema(OrderHeadSchema):
    details = fields.Dict()
    next_poll_at = fields.DateTime(allow_none=True)
    anomalies = fields.List(fields.Nested(AnomalySchema))
    timeline = fields.List(fields.Nested(TimelineEntrySchema))


class OrderListSchema(Schema):
    orders = fields.List(fields.Nested(OrderSummarySchema))
    next = fields.String(
        allow_none=True, metadata={"description": "cursor of the next page; null at the end"}
    )


class AnomalyListSchema(Schema):
    anomalies = fields.List(fields.Nested(AnomalyItemSchema))
    next = fields.String(
        allow_none=True, metadata={"description": "cursor of the next page; null at the end"}
    )


class EventSchema(Schema):
    id = fields.String(metadata={"description": "this event's cursor"})
    webhook_id = fields.String(metadata={"description": "msg_<n>: the id its push delivery carries"})
    type = fields.String(metadata={"description": "order.status_changed, order.stuck, ..."})
    timestamp = fields.String()
    data = fields.Raw(allow_none=True)


class EventsPageSchema(Schema):
    events = fields.List(fields.Nested(EventSchema))
    next = fields.String(
        metadata={
            "description": "cursor of the last event, or the one given when there is none: pass it as after"
        }
    )


class PolledOrderSchema(Schema):
    status = fields.String()
    version = fields.Integer()
    provider_status = fields.String(allow_none=True)
    decision = fields.String()


class ReconcileSchema(Schema):
    status = fields.String(
        metadata={"description": "queued, already queued, polled, pending, deferred or retrying"}
    )
    order = fields.Nested(PolledOrderSchema, metadata={"description": "after the poll (status polled)"})
    detail = fields.String()


class AcceptedSchema(Schema):
    status = fields.String()


class ReadySchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


# ------------------------------------------------------------------ loading


def load_query(schema: Schema, args: MultiDict[str, str]) -> dict[str, Any]:
    """The query string through ``schema``: a list field takes repeated values and
    comma lists; any other field is given once."""
    data: dict[str, Any] = {}
    for name in args:
        values = args.getlist(name)
        field = schema.fields.get(name)
        if isinstance(field, fields.List):
            data[name] = [part.strip() for value in values for part in value.split(",") if part.strip()]
        elif len(values) > 1:
            raise InvalidParameter(f"query parameter {name}: given more than once", [name])
        else:
            data[name] = values[0]
    return _load(schema, data, "query parameter", InvalidParameter)


def load_headers(schema: Schema, headers: Mapping[str, str]) -> dict[str, Any]:
    wanted = {f.data_key or name for name, f in schema.fields.items()}
    data = {name: value for name, value in headers.items() if name in wanted}
    return _load(schema, data, "header", InvalidParameter)


def load_body(schema: Schema, body: Mapping[str, Any]) -> dict[str, Any]:
    return _load(schema, body, "field", InvalidPayload)


def _load(schema: Schema, data: Mapping[str, Any], what: str, error: type[InvalidPayload]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        names = sorted(str(k) for k in messages)
        reasons = "; ".join(f"{what} {name}: {_text(messages[name])}" for name in names)
        raise error(reasons, names) from None


def _text(message: Any) -> str:
    if isinstance(message, dict):
        return " ".join(_text(v) for v in message.values())
    if isinstance(message, list):
        return " ".join(_text(v) for v in message)
    return str(message)


SHOW_ORDER_QUERY = ShowOrderQuery()
ORDER_LIST_QUERY = OrderListQuery()
ANOMALY_LIST_QUERY = AnomalyListQuery()
EVENTS_QUERY = EventsQuery()
RECONCILE_QUERY = ReconcileQuery()
CREATE_HEADERS = CreateHeaders()
RESOLVE_BODY = ResolveBody()
