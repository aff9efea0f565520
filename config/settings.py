"""The typed, frozen settings of rampwatch, read from the environment.

This module is the only reader of ``os.environ`` in the project. ``load_settings``
parses every variable, collects every problem and raises one ``ConfigError`` that
lists them all, so a bad deploy fails at start-up with the whole story instead of
one problem per restart. Secrets never appear in a ``repr``.

A provider is enabled only when its settings are present; a provider whose
settings are absent is ``None`` here (disabled: its webhook answers 404). A
provider whose settings are only partly present is an error, never a silently
disabled or half-verified provider.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

T = TypeVar("T")
N = TypeVar("N", int, float)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_PATH = "var/rampwatch.sqlite3"
DEFAULT_POLL_BACKOFF = (30, 60, 120, 300, 600, 1800, 3600)
DEFAULT_POLL_HORIZON = 72 * 3600
# How a rediss:// server's certificate is checked: hosted Redis add-ons (Heroku
# Redis) present self-signed certificates, which only "none" accepts.
REDIS_TLS_VERIFY_MODES = ("required", "none")


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
    """How often to poll an open order: a backoff schedule and a horizon.

    ``backoff`` is a list of delays in seconds; the n-th poll after the last
    change waits ``backoff[min(n, len-1)]``. After ``horizon`` seconds an order
    still open is flagged ``stale`` for operators (and still polled).
    """

    backoff: tuple[int, ...] = DEFAULT_POLL_BACKOFF
    horizon: int = DEFAULT_POLL_HORIZON

    def delay(self, attempt: int) -> int:
        return self.backoff[min(max(attempt, 0), len(self.backoff) - 1)]


@dataclass(frozen=True)
class AlixPaySettings:
    partner_code: str
    # Ends every string we sign; one candidate for the IPN/response string (doc bug A-3).
    secret_keys: tuple[Named[str], ...] = field(repr=False)
    # The other candidate for the IPN/response string, and sent as webhookSecretKey.
    webhook_secret_keys: tuple[Named[str], ...] = field(repr=False)
    private_key: Named[RSAPrivateKey] = field(repr=False)
    public_keys: tuple[Named[RSAPublicKey], ...] = field(repr=False)
    base_url: str
    poll: PollPolicy = PollPolicy()
    timeout: float = 10.0

    @property
    def secret_key(self) -> str:
        return self.secret_keys[0].value

    @property
    def webhook_secret_key(self) -> str:
        return self.webhook_secret_keys[0].value if self.webhook_secret_keys else ""


FUSPAY_RECIPES = ("hmac-sha512", "sha512-append", "sha512-prepend", "oracle")
FUSPAY_SIGNATURE_KEYS = ("public+secret", "secret")


@dataclass(frozen=True)
class FuspaySettings:
    partner_id: str
    public_keys: tuple[Named[str], ...] = field(repr=False)
    secret_keys: tuple[Named[str], ...] = field(repr=False)
    base_url: str
    # Fuspay does not publish its exact recipe (doc bug F-7): a setting, not code.
    signature_recipe: str = "hmac-sha512"
    signature_key: str = "public+secret"
    # Our webhook URL, sent as partner_callback_url on every sell order we create.
    callback_url: str | None = None
    poll: PollPolicy = PollPolicy()
    timeout: float = 10.0

    @property
    def secret_key(self) -> str:
        return self.secret_keys[0].value

    @property
    def public_key(self) -> str:
        return self.public_keys[0].value


@dataclass(frozen=True)
class ChangellySettings:
    api_key: str = field(repr=False)
    private_key: Named[RSAPrivateKey] = field(repr=False)
    callback_public_keys: tuple[Named[RSAPublicKey], ...] = field(repr=False)
    base_url: str = "https://fiat-api.changelly.com"
    poll: PollPolicy = PollPolicy()
    timeout: float = 10.0
    # A callback only triggers a poll; at most one such poll per order per window.
    callback_poll_window: int = 10


@dataclass(frozen=True)
class Settings:
    # URLs carry passwords (Heroku's DATABASE_URL always does): kept out of repr.
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    redis_tls_verify: str = "required"
    api_token: str | None = field(default=None, repr=False)
    alixpay: AlixPaySettings | None = None
    fuspay: FuspaySettings | None = None
    changelly: ChangellySettings | None = None
    sweep_interval: float = 5.0
    sweep_batch: int = 500
    poll_lease: int = 120
    log_level: str = "INFO"

    @property
    def safe_database_url(self) -> str:
        return redact_url(self.database_url)

    @property
    def safe_redis_url(self) -> str:
        return redact_url(self.redis_url)

    def provider(self, slug: str) -> object | None:
        """The settings of provider ``slug``, or None when it is disabled or unknown."""
        return getattr(self, slug, None) if slug in PROVIDER_SLUGS else None


PROVIDER_SLUGS = ("alixpay", "fuspay", "changelly")


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


def _poll(r: _Reader, prefix: str) -> PollPolicy:
    return PollPolicy(
        backoff=r.durations(f"{prefix}POLL_BACKOFF", DEFAULT_POLL_BACKOFF),
        horizon=r.duration(f"{prefix}POLL_HORIZON", DEFAULT_POLL_HORIZON),
    )


def _alixpay(r: _Reader) -> AlixPaySettings | None:
    names = (
        "ALIXPAY_PARTNER_CODE",
        "ALIXPAY_SECRET_KEY",
        "ALIXPAY_WEBHOOK_SECRET_KEY",
        "ALIXPAY_PRIVATE_KEY",
        "ALIXPAY_PUBLIC_KEY",
        "ALIXPAY_BASE_URL",
    )
    wanted = _wanted(r, "ALIXPAY_", names, "AliX Pay")
    if wanted is None:
        return None
    before = len(r.problems)
    secrets = _twins(r, "ALIXPAY_SECRET_KEY", r.text)
    webhook_secrets = _twins(r, "ALIXPAY_WEBHOOK_SECRET_KEY", r.text)
    private = _twins(r, "ALIXPAY_PRIVATE_KEY", lambda n: r.pem(n, _load_private))
    public = _twins(r, "ALIXPAY_PUBLIC_KEY", lambda n: r.pem(n, _load_public))
    base_url = r.url("ALIXPAY_BASE_URL")
    poll = _poll(r, "ALIXPAY_")
    timeout = r.number("ALIXPAY_TIMEOUT", 10.0, float, 0.1)
    partner = r.text("ALIXPAY_PARTNER_CODE")
    if (
        not wanted
        or len(r.problems) > before
        or not (secrets and private and public and base_url and partner)
    ):
        return None
    return AlixPaySettings(
        partner_code=partner,
        secret_keys=secrets,
        webhook_secret_keys=webhook_secrets,
        private_key=private[0],  # type: ignore[arg-type]
        public_keys=public,  # type: ignore[arg-type]
        base_url=base_url,
        poll=poll,
        timeout=timeout,
    )


def _fuspay(r: _Reader) -> FuspaySettings | None:
    names = ("FUSPAY_PARTNER_ID", "FUSPAY_PUBLIC_KEY", "FUSPAY_SECRET_KEY", "FUSPAY_BASE_URL")
    wanted = _wanted(r, "FUSPAY_", names, "Fuspay Axis")
    if wanted is None:
        return None
    before = len(r.problems)
    public = _twins(r, "FUSPAY_PUBLIC_KEY", r.text)
    secrets = _twins(r, "FUSPAY_SECRET_KEY", r.text)
    base_url = r.url("FUSPAY_BASE_URL")
    recipe = r.choice("FUSPAY_SIGNATURE_RECIPE", FUSPAY_RECIPES)
    key_mode = r.choice("FUSPAY_SIGNATURE_KEY", FUSPAY_SIGNATURE_KEYS)
    callback_url = r.url("FUSPAY_CALLBACK_URL")
    poll = _poll(r, "FUSPAY_")
    timeout = r.number("FUSPAY_TIMEOUT", 10.0, float, 0.1)
    partner = r.text("FUSPAY_PARTNER_ID")
    if not wanted or len(r.problems) > before or not (public and secrets and base_url and partner):
        return None
    return FuspaySettings(
        partner_id=partner,
        public_keys=public,
        secret_keys=secrets,
        base_url=base_url,
        signature_recipe=recipe,
        signature_key=key_mode,
        callback_url=callback_url,
        poll=poll,
        timeout=timeout,
    )


def _changelly(r: _Reader) -> ChangellySettings | None:
    names = (
        "CHANGELLY_API_KEY",
        "CHANGELLY_PRIVATE_KEY",
        "CHANGELLY_CALLBACK_PUBLIC_KEY",
        "CHANGELLY_BASE_URL",
    )
    wanted = _wanted(r, "CHANGELLY_", names, "Changelly Fiat")
    if wanted is None:
        return None
    before = len(r.problems)
    api_keys = _twins(r, "CHANGELLY_API_KEY", r.text)
    private = _twins(r, "CHANGELLY_PRIVATE_KEY", lambda n: r.pem(n, _load_private))
    callback = _twins(r, "CHANGELLY_CALLBACK_PUBLIC_KEY", lambda n: r.pem(n, _load_public))
    base_url = r.url("CHANGELLY_BASE_URL")
    poll = _poll(r, "CHANGELLY_")
    timeout = r.number("CHANGELLY_TIMEOUT", 10.0, float, 0.1)
    window = r.duration("CHANGELLY_CALLBACK_POLL_WINDOW", 10)
    if not wanted or len(r.problems) > before or not (api_keys and private and callback and base_url):
        return None
    return ChangellySettings(
        api_key=api_keys[0].value,
        private_key=private[0],  # type: ignore[arg-type]
        callback_public_keys=callback,  # type: ignore[arg-type]
        base_url=base_url,
        poll=poll,
        timeout=timeout,
        callback_poll_window=window,
    )


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


def load_settings(env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Settings:
    """Build the frozen Settings from ``env`` (default: the process environment).

    Raises ConfigError listing every problem found.
    """
    r = _Reader(os.environ if env is None else env)
    base = base_dir or Path.cwd()
    database_url = r.text("DATABASE_URL") or f"sqlite:///{(base / DEFAULT_DATABASE_PATH).as_posix()}"
    if not database_url.startswith(("sqlite", "postgres")):
        r.problems.append("DATABASE_URL: only sqlite:/// and postgresql:// URLs are supported")
    redis_url = (
        r.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")) or DEFAULT_REDIS_URL
    )
    api_token = r.text("RAMPWATCH_API_TOKEN")
    if api_token is not None and len(api_token) < 16:
        r.problems.append("RAMPWATCH_API_TOKEN: must be at least 16 characters")
        api_token = None
    log_level = (r.text("RAMPWATCH_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        r.problems.append("RAMPWATCH_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR")
    settings = Settings(
        database_url=normalise_database_url(database_url),
        redis_url=redis_url,
        redis_tls_verify=r.choice("REDIS_TLS_VERIFY", REDIS_TLS_VERIFY_MODES),
        api_token=api_token,
        alixpay=_alixpay(r),
        fuspay=_fuspay(r),
        changelly=_changelly(r),
        sweep_interval=r.number("RAMPWATCH_SWEEP_INTERVAL", 5.0, float, 0.1),
        sweep_batch=r.number("RAMPWATCH_SWEEP_BATCH", 500, int, 1),
        poll_lease=r.duration("RAMPWATCH_POLL_LEASE", 120),
        log_level=log_level,
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings
