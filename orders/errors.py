"""The named errors of the domain. Few, flat, and each says what went wrong.

Error policy: a ``DataError`` is about the input (bad payload, bad signature,
unknown order) and retrying will not help, so jobs let it reach RQ's failed
registry at once. A ``ProviderUnavailable`` is transient (timeout, 5xx, 429) and
is retried; the sweep polls again later in any case.
"""


class RampwatchError(Exception):
    """Base of every rampwatch error."""


class DataError(RampwatchError):
    """The input is wrong; retrying the same input will not help."""


class BadEventPayload(DataError):
    """An event payload does not follow the event contract."""


class InvalidPayload(DataError):
    """A provider payload is not JSON or lacks required fields."""

    def __init__(self, message: str, fields: list[str] | None = None):
        self.fields = list(fields or [])
        super().__init__(message)


class SignatureInvalid(DataError):
    """A signature is missing or does not verify with any configured key."""


class OrderNotFound(DataError):
    """No such order in the store (or at the provider)."""


class ProviderDisabled(DataError):
    """The provider is unknown or its settings are absent."""


class ProviderError(RampwatchError):
    """A provider answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class ProviderRejected(ProviderError, DataError):
    """The provider refused the request (4xx or a business error); do not retry as is."""


class ProviderUnavailable(ProviderError):
    """Timeout, connection failure, 408, 5xx or 429: transient, retry later."""


class ProviderRateLimited(ProviderUnavailable):
    """HTTP 429: ``retry_after`` is the seconds the provider asked us to wait (None when unsaid)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
    ):
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class ProviderResponseInvalid(ProviderError, DataError):
    """The provider's answer is unreadable or its signature does not verify."""


class Conflict(DataError):
    """The request contradicts what the store holds; ``code`` says how
    (``idempotency_conflict``, ``order_exists``, ``creation_in_progress``,
    ``already_resolved``). ``retry_after``: seconds after which the same request may
    succeed (only for a conflict that passes)."""

    def __init__(self, message: str, *, code: str, retry_after: int | None = None):
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)


class AnomalyNotFound(DataError):
    """No anomaly with that id."""
