"""The typed, frozen settings of rampwatch, read from the environment.

This module is the only reader of ``os.environ`` in the project. ``load_settings``
parses every variable, collects every problem and raises one ``ConfigError`` that
lists them all, so a bad deploy fails at start-up with the whole story instead of
one problem per restart. Secrets never appear in a ``repr``.

Each provider declares its settings as a frozen dataclass whose fields say,
with ``setting(...)``, which variable each comes from and how to read it
(``orders/providers/<slug>/settings.py``); one loader here reads them all, so
the list of providers is the registry's (``orders.providers``), passed in by
the entry points. A provider is enabled only when its settings are present; a
provider whose settings are absent is not in ``Settings.providers`` (disabled:
its webhook answers 404). A provider whose settings are only partly present is
an error, never a silently disabled or half-verified provider.

A ``.env`` file in the working directory (``NAME=value`` lines, as ``rampwatch
dev`` writes one) is read too when the process environment is used; variables
set in the environment win.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from dotenv import dotenv_values

T = TypeVar("T")
N = TypeVar("N", int, float)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_PATH = "var/rampwatch.sqlite3"
DEFAULT_POLL_BACKOFF = (30, 60, 120, 300, 600, 1800, 3600)
DEFAULT_POLL_HORIZON = 72 * 3600
# How long an order is expected to stay in each open state before it counts as stuck;
# each provider's settings adjust these to its documented flow (``stuck_times``).
STUCK_STATES = ("CREATED", "AWAITING_PAYMENT", "PAYMENT_RECEIVED", "PROCESSING", "ON_HOLD")
DEFAULT_STUCK_AFTER: tuple[tuple[str, int], ...] = (
    ("CREATED", 15 * 60),
    ("AWAITING_PAYMENT", 2 * 3600),
    ("PAYMENT_RECEIVED", 3600),
    ("PROCESSING", 2 * 3600),
    ("ON_HOLD", 24 * 3600),
)
# How a rediss:// server's certificate is checked: hosted Redis add-ons (Heroku
# Redis) present self-signed certificates, which only "none" accepts.
REDIS_TLS_VERIFY_MODES = ("required", "none")
LOG_FORMATS = ("text", "json")
# Refused (unverified) webhook requests one client address may make to one
# provider per window before it is answered 429 for the rest of the window.
DEFAULT_UNVERIFIED_LIMIT = 30
DEFAULT_UNVERIFIED_WINDOW = 60
# Partner notifications: delays between delivery attempts (each with up to 20% jitter),
# then the notification is dead-lettered after NOTIFY_MAX_ATTEMPTS attempts.
DEFAULT_NOTIFY_BACKOFF = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
DEFAULT_NOTIFY_MAX_ATTEMPTS = 12
DEFAULT_NOTIFY_TIMEOUT = 5.0


class ConfigError(Exception):
    """One or more settings are missing or invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid settings:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class Named(Generic[T]):
    """A secret or key together with the setting it came from (for audit records)."""

    name: str
    value: T = field(repr=False)


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll an open order, how long it may stay in each state, and a horizon.

    ``backoff`` is a list of delays in seconds; the n-th poll after the last
    change waits ``backoff[min(n, len-1)]``. ``stuck_after`` gives, per
    non-terminal canonical status, how long an order is expected to stay in it:
    past that it is flagged ``stuck`` (once per state; the partner is told). After
    ``horizon`` seconds an order still open is flagged ``stale`` for operators
    (and still polled).
    """

    backoff: tuple[int, ...] = DEFAULT_POLL_BACKOFF
    horizon: int = DEFAULT_POLL_HORIZON
    stuck_after: tuple[tuple[str, int], ...] = DEFAULT_STUCK_AFTER

    def delay(self, attempt: int) -> int:
        return self.backoff[min(max(attempt, 0), len(self.backoff) - 1)]

    def expected(self, status: str) -> int | None:
        """Seconds an order is expected to stay in ``status`` (None: no expectation)."""
        return dict(self.stuck_after).get(status)


def stuck_times(**seconds: int) -> tuple[tuple[str, int], ...]:
    """``DEFAULT_STUCK_AFTER`` with some statuses' times replaced (a provider's flow)."""
    return tuple({**dict(DEFAULT_STUCK_AFTER), **seconds}.items())


# ------------------------------------------------------------ provider settings

SPEC = "rampwatch.setting"
KINDS = ("text", "url", "private_key", "public_key", "number", "duration", "choice", "poll", "cidrs")


@dataclass(frozen=True)
class Spec:
    """How one field of a provider's settings is read: the variable (``prefix +
    name``), its kind, whether it is required, whether a ``_PREVIOUS`` twin is
    accepted during a rotation (the value is then a tuple of ``Named``), and
    what it means (for the README, app.json and error messages)."""

    name: str
    kind: str
    required: bool = False
    rotation: bool = False
    secret: bool = False
    options: tuple[str, ...] = ()
    minimum: float = 0.0
    description: str = ""

    @property
    def named(self) -> bool:
        """Keys keep the name of the setting they came from (the event records it)."""
        return self.kind in ("private_key", "public_key")


def setting(
    name: str,
    kind: str = "text",
    *,
    required: bool = False,
    rotation: bool = False,
    secret: bool = False,
    options: tuple[str, ...] = (),
    minimum: float = 0.0,
    default: Any = dataclasses.MISSING,
    description: str = "",
) -> Any:
    """A provider settings field read from the variable ``<prefix><name>``. A
    ``secret`` (and every key) never appears in a ``repr``; with ``rotation`` the
    value is the current and ``_PREVIOUS`` values as ``Named``, current first."""
    if kind not in KINDS:
        raise ValueError(f"unknown setting kind {kind!r}")
    secret = secret or kind in ("private_key", "public_key")
    spec = Spec(name, kind, required, rotation, secret, options, minimum, description)
    return field(default=default, repr=not secret, metadata={SPEC: spec})


def poll_setting(default: PollPolicy | None = None) -> Any:
    """The provider's poll policy, from ``<prefix>POLL_BACKOFF``, ``<prefix>POLL_HORIZON``
    and ``<prefix>STUCK_AFTER``, over ``default`` (the provider's documented flow)."""
    return setting(
        "POLL",
        "poll",
        default=default or PollPolicy(),
        description="POLL_BACKOFF: delays between polls of an open order (reset on every change); "
        "POLL_HORIZON: an order open longer is flagged stale; "
        "STUCK_AFTER: STATUS=duration pairs, how long an order may stay in a state before it is stuck",
    )


class ProviderSettings(Protocol):
    """What every provider's settings class has (and ``setting`` fields)."""

    prefix: ClassVar[str]  # "ALIXPAY_"
    label: ClassVar[str]  # "AliX Pay"
    poll: PollPolicy
    timeout: float


def specs(cls: type) -> list[tuple[str, Spec]]:
    """(field name, spec) of every ``setting`` field of a provider settings class."""
    return [(f.name, f.metadata[SPEC]) for f in dataclasses.fields(cls) if SPEC in f.metadata]


def variables(cls: Any) -> list[tuple[str, Spec]]:
    """Every environment variable a provider settings class reads, with its spec."""
    out = []
    for _, spec in specs(cls):
        if spec.kind == "poll":
            out += [(f"{cls.prefix}{n}", spec) for n in ("POLL_BACKOFF", "POLL_HORIZON", "STUCK_AFTER")]
            continue
        out.append((cls.prefix + spec.name, spec))
        if spec.rotation:
            out.append((f"{cls.prefix}{spec.name}_PREVIOUS", spec))
    return out


@dataclass(frozen=True)
class Settings:
    # URLs carry passwords (Heroku's DATABASE_URL always does): kept out of repr.
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    redis_tls_verify: str = "required"
    api_token: str | None = field(default=None, repr=False)  # the partner's
    ops_token: str | None = field(default=None, repr=False)  # the operator's: raw bodies, repairs
    # slug -> that provider's settings, for the enabled providers only
    providers: Mapping[str, Any] = field(default_factory=dict)
    sweep_interval: float = 5.0
    sweep_batch: int = 500
    # Sweep polls (workers.polls): orders per batch job, and the most requests in flight to
    # one provider from one worker process (the fleet's bound: that times the workers).
    poll_batch: int = 100
    poll_concurrency: int = 8
    poll_lease: int = 120
    # The callback stream (workers.stream): events applied per transaction, how long an
    # entry may stay read and unapplied before another worker takes it over, and how many
    # deliveries it gets before it goes to the dead-letter stream.
    stream_batch: int = 200
    stream_claim_idle: float = 10.0
    stream_max_deliveries: int = 5
    stream_linger: float = 0.02
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line
    sentry_dsn: str | None = field(default=None, repr=False)  # error reporting, when set
    sentry_environment: str | None = None
    # How many proxies in front of the web process append to X-Forwarded-For (Heroku's
    # router: 1); 0 trusts no such header and takes the peer's address.
    trusted_proxies: int = 0
    unverified_limit: int = DEFAULT_UNVERIFIED_LIMIT
    unverified_window: int = DEFAULT_UNVERIFIED_WINDOW
    # Where the partner is told of changes (None: not pushed; the events feed still serves them).
    notify_url: str | None = None
    # Standard Webhooks secrets (whsec_...), current first, then NOTIFY_SECRET_PREVIOUS.
    notify_secrets: tuple[Named[str], ...] = field(default=(), repr=False)
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT
    notify_max_attempts: int = DEFAULT_NOTIFY_MAX_ATTEMPTS
    notify_concurrency: int = 8
    notify_backoff: tuple[int, ...] = DEFAULT_NOTIFY_BACKOFF

    @property
    def safe_database_url(self) -> str:
        return redact_url(self.database_url)

    @property
    def safe_redis_url(self) -> str:
        return redact_url(self.redis_url)

    def __post_init__(self) -> None:
        object.__setattr__(self, "providers", MappingProxyType(dict(self.providers)))

    def provider(self, slug: str) -> Any | None:
        """The settings of provider ``slug``, or None when it is disabled or unknown."""
        return self.providers.get(slug)


class _Reader:
    """Reads variables from a mapping, recording problems instead of raising."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return value.strip() if value is not None else default

    def number(self, name: str, default: N, kind: Callable[[str], N], minimum: N) -> N:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = kind(value.strip())
        except ValueError:
            self.problems.append(f"{name}: expected a number, got {value.strip()!r}")
            return default
        if parsed < minimum:
            self.problems.append(f"{name}: must be at least {minimum}, got {parsed}")
            return default
        return parsed

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name)
        if value is None:
            return options[0]
        if value not in options:
            self.problems.append(f"{name}: one of {', '.join(options)}; got {value!r}")
            return options[0]
        return value

    def durations(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        value = self.raw(name)
        if value is None:
            return default
        out: list[int] = []
        bad = []
        for part in value.split(","):
            seconds = parse_duration(part)
            if seconds is None or seconds <= 0:
                bad.append(part.strip())
            else:
                out.append(seconds)
        if bad:
            self.problems.append(
                f"{name}: {', '.join(repr(b) for b in bad)} not positive durations (examples: 30, 30s, 5m, 2h, 1d)"
            )
            return default
        return tuple(out)

    def duration(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None or seconds <= 0:
            self.problems.append(f"{name}: {value.strip()!r} is not a positive duration (examples: 90s, 72h)")
            return default
        return seconds

    def url(
        self, name: str, default: str | None = None, schemes: tuple[str, ...] = ("http", "https")
    ) -> str | None:
        value = self.text(name, default)
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in schemes:
            self.problems.append(
                f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
            )
            return None
        return value.rstrip("/")

    def cidrs(self, name: str) -> tuple[IPNetwork, ...] | None:
        """Comma-separated IP addresses or CIDR networks (``203.0.113.7, 198.51.100.0/24``)."""
        value = self.raw(name)
        if value is None:
            return None
        out: list[IPNetwork] = []
        bad: list[str] = []
        for part in (p.strip() for p in value.split(",")):
            try:
                out.append(ipaddress.ip_network(part))
            except ValueError:
                bad.append(part)
        if bad:
            self.problems.append(
                f"{name}: {', '.join(repr(b) for b in bad)} not IP addresses or CIDR networks "
                "(examples: 203.0.113.7, 198.51.100.0/24, 2001:db8::/32; no host bits after the /)"
            )
            return None
        return tuple(out)

    def pem(self, name: str, loader: Callable[[bytes], object]) -> object | None:
        """A key given as PEM text, base64 of PEM, or a path to a PEM file."""
        value = self.raw(name)
        if value is None:
            return None
        data = _pem_bytes(value)
        if data is None:
            self.problems.append(f"{name}: neither PEM text, base64 of a PEM, nor a readable PEM file path")
            return None
        try:
            return loader(data)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{name}: not a usable key ({type(exc).__name__})")
            return None


def _pem_bytes(value: str) -> bytes | None:
    text = value.strip()
    if "-----BEGIN" in text:
        # Environment variables often carry PEMs with literal "\n" sequences.
        return text.replace("\\n", "\n").encode()
    try:
        path = Path(text)
        if path.is_file():
            return path.read_bytes()
    except OSError:
        pass  # not a usable path (a base64 PEM is one over-long "file name"): try base64
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return decoded if b"-----BEGIN" in decoded else None


def _load_private(data: bytes) -> RSAPrivateKey:
    key = load_pem_private_key(data, password=None)
    if not isinstance(key, RSAPrivateKey):
        raise TypeError("not an RSA private key")
    return key


def _load_public(data: bytes) -> RSAPublicKey:
    key = load_pem_public_key(data)
    if not isinstance(key, RSAPublicKey):
        raise TypeError("not an RSA public key")
    return key


def parse_duration(text: str) -> int | None:
    """Seconds in ``30``, ``30s``, ``5m``, ``2h`` or ``1d``; None when unreadable."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = 1
    if text and text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    if not text.isdigit():
        return None
    return int(text) * factor


def _twins(r: _Reader, name: str, get: Callable[[str], T | None]) -> tuple[Named[T], ...]:
    """The current value of ``name`` and its ``_PREVIOUS`` twin, when set."""
    out = []
    for n in (name, name + "_PREVIOUS"):
        value = get(n)
        if value is not None:
            out.append(Named(n, value))
    if not out[:1] or out[0].name != name:
        if r.raw(name) is None and r.raw(name + "_PREVIOUS") is not None:
            r.problems.append(f"{name}_PREVIOUS is set but {name} is not")
        return ()
    return tuple(out)


def _wanted(r: _Reader, prefix: str, required: tuple[str, ...], label: str) -> bool | None:
    """None: the provider is not configured at all (disabled). False: partly
    configured (each missing variable is listed). True: every required one is set."""
    # Any PREFIX_* variable (tuning ones too) means the provider is meant to be on.
    if not any(n.startswith(prefix) and r.raw(n) is not None for n in r.env):
        return None
    missing = [n for n in required if r.raw(n) is None]
    for n in missing:
        r.problems.append(f"{n}: required once any {prefix}* setting is set ({label} is partly configured)")
    return not missing


def _poll(r: _Reader, prefix: str, default: PollPolicy) -> PollPolicy:
    return PollPolicy(
        backoff=r.durations(f"{prefix}POLL_BACKOFF", default.backoff),
        horizon=r.duration(f"{prefix}POLL_HORIZON", default.horizon),
        stuck_after=_stuck_after(r, f"{prefix}STUCK_AFTER", default.stuck_after),
    )


def _stuck_after(r: _Reader, name: str, default: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """``AWAITING_PAYMENT=1h,ON_HOLD=2d``: the statuses named take these times, the others
    keep the provider's defaults."""
    value = r.raw(name)
    if value is None:
        return default
    times = dict(default)
    bad = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        status, _, duration = part.partition("=")
        seconds = parse_duration(duration)
        if status.strip().upper() not in STUCK_STATES or seconds is None or seconds <= 0:
            bad.append(part)
        else:
            times[status.strip().upper()] = seconds
    if bad:
        r.problems.append(
            f"{name}: {', '.join(repr(b) for b in bad)} not STATUS=duration pairs "
            f"(statuses: {', '.join(STUCK_STATES)}; example: AWAITING_PAYMENT=1h,ON_HOLD=2d)"
        )
        return default
    return tuple(times.items())


def _getter(r: _Reader, spec: Spec) -> Callable[[str], Any]:
    """How to read one variable of ``spec``'s kind (None when unset)."""
    if spec.kind == "text":
        return r.text
    if spec.kind == "url":
        return r.url
    if spec.kind == "private_key":
        return lambda n: r.pem(n, _load_private)
    if spec.kind == "public_key":
        return lambda n: r.pem(n, _load_public)
    if spec.kind == "number":
        return lambda n: None if r.raw(n) is None else r.number(n, None, float, spec.minimum)
    if spec.kind == "duration":
        return lambda n: None if r.raw(n) is None else r.duration(n, 0) or None
    if spec.kind == "choice":
        return lambda n: None if r.raw(n) is None else r.choice(n, spec.options)
    if spec.kind == "cidrs":
        return r.cidrs
    raise ValueError(spec.kind)


def _provider(r: _Reader, cls: Any) -> Any | None:
    """One provider's settings (None: disabled, or a problem recorded in ``r``)."""
    fields_ = specs(cls)
    required = tuple(cls.prefix + spec.name for _, spec in fields_ if spec.required)
    wanted = _wanted(r, cls.prefix, required, cls.label)
    if wanted is None:
        return None
    before = len(r.problems)
    values: dict[str, Any] = {}
    for attr, spec in fields_:
        name = cls.prefix + spec.name
        if spec.kind == "poll":
            field_default = next(f.default for f in dataclasses.fields(cls) if f.name == attr)
            values[attr] = _poll(r, cls.prefix, field_default)
            continue
        get = _getter(r, spec)
        if spec.rotation:
            value: Any = _twins(r, name, get) or None
        else:
            value = get(name)
            if value is not None and spec.named:
                value = Named(name, value)
        if value is not None:
            values[attr] = value
    missing = [attr for attr, spec in fields_ if spec.required and attr not in values]
    if not wanted or len(r.problems) > before or missing:
        return None
    return cls(**values)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def normalise_database_url(url: str) -> str:
    """Heroku-style ``postgres://`` URLs name the psycopg 3 driver explicitly."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    *,
    providers: Mapping[str, type],
) -> Settings:
    """Build the frozen Settings from ``env`` (default: the process environment, over
    the ``.env`` file in ``base_dir`` if there is one), for the ``providers`` given
    (slug -> settings class: the registry's, ``orders.providers``).

    Raises ConfigError listing every problem found.
    """
    base = base_dir or Path.cwd()
    r = _Reader(process_environment(base) if env is None else env)
    database_url = r.text("DATABASE_URL") or f"sqlite:///{(base / DEFAULT_DATABASE_PATH).as_posix()}"
    if not database_url.startswith(("sqlite", "postgres")):
        r.problems.append("DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported")
    redis_url = (
        r.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")) or DEFAULT_REDIS_URL
    )
    api_token = _token(r, "RAMPWATCH_API_TOKEN")
    ops_token = _token(r, "RAMPWATCH_OPS_TOKEN")
    if api_token is not None and api_token == ops_token:
        r.problems.append("RAMPWATCH_OPS_TOKEN: must differ from RAMPWATCH_API_TOKEN")
        ops_token = None
    notify_url = r.url("NOTIFY_URL")
    notify_secrets = _twins(r, "NOTIFY_SECRET", lambda name: _webhook_secret(r, name))
    if notify_url and not notify_secrets:
        r.problems.append(
            "NOTIFY_SECRET: required with NOTIFY_URL (a whsec_... secret to sign notifications)"
        )
    log_level = (r.text("RAMPWATCH_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        r.problems.append("RAMPWATCH_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR")
    settings = Settings(
        database_url=normalise_database_url(database_url),
        redis_url=redis_url,
        redis_tls_verify=r.choice("REDIS_TLS_VERIFY", REDIS_TLS_VERIFY_MODES),
        api_token=api_token,
        ops_token=ops_token,
        providers={
            slug: loaded for slug, cls in providers.items() if (loaded := _provider(r, cls)) is not None
        },
        sweep_interval=r.number("RAMPWATCH_SWEEP_INTERVAL", 5.0, float, 0.1),
        sweep_batch=r.number("RAMPWATCH_SWEEP_BATCH", 500, int, 1),
        poll_batch=r.number("RAMPWATCH_POLL_BATCH", 100, int, 1),
        poll_concurrency=r.number("RAMPWATCH_POLL_CONCURRENCY", 8, int, 1),
        poll_lease=r.duration("RAMPWATCH_POLL_LEASE", 120),
        stream_batch=r.number("RAMPWATCH_STREAM_BATCH", 200, int, 1),
        stream_claim_idle=r.number("RAMPWATCH_STREAM_CLAIM_IDLE", 10.0, float, 0.1),
        stream_max_deliveries=r.number("RAMPWATCH_STREAM_MAX_DELIVERIES", 5, int, 1),
        stream_linger=_linger(r),
        log_level=log_level,
        log_format=r.choice("RAMPWATCH_LOG_FORMAT", LOG_FORMATS),
        sentry_dsn=r.url("SENTRY_DSN"),
        sentry_environment=r.text("SENTRY_ENVIRONMENT"),
        trusted_proxies=r.number("RAMPWATCH_TRUSTED_PROXIES", 0, int, 0),
        unverified_limit=r.number("RAMPWATCH_UNVERIFIED_LIMIT", DEFAULT_UNVERIFIED_LIMIT, int, 1),
        unverified_window=r.duration("RAMPWATCH_UNVERIFIED_WINDOW", DEFAULT_UNVERIFIED_WINDOW),
        notify_url=notify_url,
        notify_secrets=notify_secrets,
        notify_timeout=r.number("NOTIFY_TIMEOUT", DEFAULT_NOTIFY_TIMEOUT, float, 0.1),
        notify_max_attempts=r.number("NOTIFY_MAX_ATTEMPTS", DEFAULT_NOTIFY_MAX_ATTEMPTS, int, 1),
        notify_concurrency=r.number("NOTIFY_CONCURRENCY", 8, int, 1),
        notify_backoff=r.durations("NOTIFY_BACKOFF", DEFAULT_NOTIFY_BACKOFF),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings


def _linger(r: _Reader) -> float:
    """RAMPWATCH_STREAM_LINGER: 0 to 1 second (a consumer waits at most this for a fuller batch)."""
    linger = r.number("RAMPWATCH_STREAM_LINGER", 0.02, float, 0.0)
    if linger > 1.0:
        r.problems.append(f"RAMPWATCH_STREAM_LINGER: must be at most 1 (seconds), got {linger}")
        return 0.02
    return linger


def _token(r: _Reader, name: str) -> str | None:
    token = r.text(name)
    if token is not None and len(token) < 16:
        r.problems.append(f"{name}: must be at least 16 characters")
        return None
    return token


def _webhook_secret(r: _Reader, name: str) -> str | None:
    """A Standard Webhooks secret: ``whsec_`` then base64 of 24 to 64 random bytes."""
    value = r.text(name)
    if value is None:
        return None
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not value.startswith("whsec_") or not 24 <= len(key) <= 64:
        r.problems.append(
            f"{name}: expected whsec_ followed by base64 of 24 to 64 random bytes "
            '(make one: python -c "import base64,os;'
            "print('whsec_'+base64.b64encode(os.urandom(32)).decode())\")"
        )
        return None
    return value


def process_environment(base_dir: Path) -> dict[str, str]:
    """``os.environ`` over the ``.env`` file in ``base_dir``, when there is one."""
    dotenv = base_dir / ".env"
    values: dict[str, str] = {}
    if dotenv.is_file():
        values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
    return {**values, **os.environ}
