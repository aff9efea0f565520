"""config.settings: defaults, every problem at once, AliX keys and rotation twins, secrecy."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path

import pytest
from conftest import SECRET, WEBHOOK_SECRET, Keys, alix_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config import ConfigError, Named, PollPolicy, Settings, parse_duration
from orders.providers import load_settings
from orders.providers.alixpay.settings import AlixPaySettings

BASE_URL = "http://127.0.0.1:1"
ALIX_REQUIRED = (
    "ALIXPAY_PARTNER_CODE",
    "ALIXPAY_SECRET_KEY",
    "ALIXPAY_WEBHOOK_SECRET_KEY",
    "ALIXPAY_PRIVATE_KEY",
    "ALIXPAY_PUBLIC_KEY",
    "ALIXPAY_BASE_URL",
)
DEFAULT_BACKOFF = (30, 60, 120, 300, 600, 1800, 3600)


def problems_of(env: dict[str, str], base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env, base_dir)
    problems = info.value.problems
    assert problems, "a ConfigError must list at least one problem"
    # The message lists every problem too.
    for problem in problems:
        assert problem in str(info.value)
    return problems


def named(problems: list[str]) -> set[str]:
    """The variable each problem is about (its first word, before ':' or a space)."""
    out = set()
    for problem in problems:
        match = re.match(r"[A-Z][A-Z0-9_]*", problem)
        assert match, f"problem does not start with a variable name: {problem!r}"
        out.add(match.group(0))
    return out


def public_pem_pkcs1(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()


def private_pem_pkcs1(key: rsa.RSAPrivateKey) -> str:
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


# --------------------------------------------------------------------------- defaults


def test_empty_env_gives_working_defaults(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path)
    assert isinstance(s, Settings)
    assert s.database_url == f"sqlite:///{(tmp_path / 'var' / 'rampwatch.sqlite3').as_posix()}"
    assert s.database_url.startswith(f"sqlite:///{tmp_path.as_posix()}/var/")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.api_token is None
    assert s.provider("alixpay") is None  # disabled
    assert s.provider("alixpay") is None
    assert s.provider("changelly") is None
    assert s.provider("nonsense") is None
    assert s.log_level == "INFO"
    assert s.sweep_interval == 5.0
    assert s.sweep_batch == 500
    assert s.poll_lease == 120
    assert s.stream_linger == 0.02


def test_blank_values_count_as_unset(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "  ", "REDIS_URL": "", "RAMPWATCH_API_TOKEN": " \t", "ALIXPAY_SECRET_KEY": "  "}
    s = load_settings(env, tmp_path)
    assert s.database_url.endswith("/var/rampwatch.sqlite3")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.api_token is None
    assert s.provider("alixpay") is None


def test_core_values_are_read(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "sqlite:////srv/data/rw.sqlite3",
        "REDIS_URL": "rediss://cache.example:6380/2",
        "RAMPWATCH_API_TOKEN": "  0123456789abcdef-token  ",
        "RAMPWATCH_LOG_LEVEL": "debug",
        "RAMPWATCH_SWEEP_INTERVAL": "2.5",
        "RAMPWATCH_SWEEP_BATCH": "50",
        "RAMPWATCH_POLL_LEASE": "2m",
        "RAMPWATCH_STREAM_LINGER": "0",
    }
    s = load_settings(env, tmp_path)
    assert s.database_url == "sqlite:////srv/data/rw.sqlite3"
    assert s.redis_url == "rediss://cache.example:6380/2"
    assert s.api_token == "0123456789abcdef-token"
    assert s.log_level == "DEBUG"
    assert s.sweep_interval == 2.5
    assert s.sweep_batch == 50
    assert s.poll_lease == 120
    assert s.stream_linger == 0.0


def test_no_env_argument_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("ALIXPAY_", "RAMPWATCH_")) or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAMPWATCH_API_TOKEN", "from-the-process-environment")
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:1/3")
    s = load_settings(base_dir=tmp_path)
    assert s.api_token == "from-the-process-environment"
    assert s.redis_url == "redis://example.invalid:1/3"


def test_a_dotenv_file_in_the_working_directory_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: Keys
) -> None:
    """What ``rampwatch dev`` writes lets a second shell work after ``cd`` into the checkout."""
    import os

    for name in list(os.environ):
        if name.startswith(("ALIXPAY_", "FUSPAY_", "CHANGELLY_", "RAMPWATCH_")) or name in (
            "DATABASE_URL",
            "REDIS_URL",
        ):
            monkeypatch.delenv(name)
    key_file = tmp_path / "alix.pub.pem"
    key_file.write_text(keys.alix.public_pem)
    dotenv = {**alix_env(keys, BASE_URL), "ALIXPAY_PUBLIC_KEY": str(key_file)}
    dotenv.pop("ALIXPAY_PRIVATE_KEY")
    private_file = tmp_path / "ours.pem"
    private_file.write_text(keys.partner.private_pem)
    dotenv["ALIXPAY_PRIVATE_KEY"] = str(private_file)
    lines = [f"{k}={v}" for k, v in dotenv.items()]
    lines += ["# a comment", "export RAMPWATCH_SWEEP_BATCH=7", 'RAMPWATCH_LOG_LEVEL="debug"']
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("RAMPWATCH_SWEEP_BATCH", "9")  # the environment wins over the file
    s = load_settings(base_dir=tmp_path)
    assert s.sweep_batch == 9 and s.log_level == "DEBUG"
    alix = s.provider("alixpay")
    assert alix is not None and alix.partner_code == "rampwatch-test"
    assert alix.public_keys[0].value.public_numbers() == keys.alix.public.public_numbers()
    # An explicit environment is all there is: no file is read.
    assert load_settings({}, tmp_path).provider("alixpay") is None


# --------------------------------------------------------------------------- every problem at once


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "mysql://u:p@h/db",
        "REDIS_URL": "http://127.0.0.1:6379/0",
        "RAMPWATCH_API_TOKEN": "short",
        "RAMPWATCH_LOG_LEVEL": "LOUD",
        "RAMPWATCH_SWEEP_INTERVAL": "often",
        "RAMPWATCH_SWEEP_BATCH": "0",
        "RAMPWATCH_POLL_LEASE": "soon",
    }
    problems = problems_of(env, tmp_path)
    assert named(problems) == set(env)
    assert len(problems) == len(env)


def test_core_and_alix_problems_are_listed_together(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    del env["ALIXPAY_SECRET_KEY"]
    env["ALIXPAY_BASE_URL"] = "ftp://alix.example"
    env["ALIXPAY_TIMEOUT"] = "0.01"
    env["ALIXPAY_POLL_HORIZON"] = "forever"
    env["RAMPWATCH_LOG_LEVEL"] = "CHATTY"
    problems = problems_of(env, tmp_path)
    assert named(problems) >= {
        "ALIXPAY_SECRET_KEY",
        "ALIXPAY_BASE_URL",
        "ALIXPAY_TIMEOUT",
        "ALIXPAY_POLL_HORIZON",
        "RAMPWATCH_LOG_LEVEL",
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAMPWATCH_SWEEP_INTERVAL", "0.01"),
        ("RAMPWATCH_SWEEP_INTERVAL", "-1"),
        ("RAMPWATCH_SWEEP_BATCH", "1.5"),
        ("RAMPWATCH_SWEEP_BATCH", "-3"),
        ("RAMPWATCH_POLL_LEASE", "0"),
        ("RAMPWATCH_POLL_LEASE", "1.5m"),
        ("RAMPWATCH_STREAM_LINGER", "-0.1"),
        ("RAMPWATCH_STREAM_LINGER", "2"),
        ("RAMPWATCH_STREAM_LINGER", "20ms"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("DATABASE_URL", "oracle://x"),
        ("RAMPWATCH_LOG_LEVEL", "TRACE"),
        ("REDIS_TLS_VERIFY", "optional"),
    ],
)
def test_each_bad_core_value_is_a_problem(tmp_path: Path, name: str, value: str) -> None:
    assert named(problems_of({name: value}, tmp_path)) == {name}


def test_redis_tls_verification_is_required_unless_turned_off(tmp_path: Path) -> None:
    assert load_settings({}, tmp_path).redis_tls_verify == "required"
    assert load_settings({"REDIS_TLS_VERIFY": "required"}, tmp_path).redis_tls_verify == "required"
    assert load_settings({"REDIS_TLS_VERIFY": " none "}, tmp_path).redis_tls_verify == "none"
    (problem,) = problems_of({"REDIS_TLS_VERIFY": "off"}, tmp_path)
    assert problem == "REDIS_TLS_VERIFY: one of required, none; got 'off'"


# --------------------------------------------------------------------------- AliX: partly configured


def test_one_alix_variable_alone_names_every_missing_one(tmp_path: Path) -> None:
    problems = problems_of({"ALIXPAY_PARTNER_CODE": "someone"}, tmp_path)
    assert named(problems) == set(ALIX_REQUIRED) - {"ALIXPAY_PARTNER_CODE"}


@pytest.mark.parametrize("missing", ALIX_REQUIRED)
def test_full_alix_config_less_one_names_that_one(keys: Keys, tmp_path: Path, missing: str) -> None:
    env = alix_env(keys, BASE_URL)
    del env[missing]
    problems = problems_of(env, tmp_path)
    assert named(problems) == {missing}
    assert "ALIXPAY" in problems[0]


def test_two_missing_alix_variables_are_both_named(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    del env["ALIXPAY_PUBLIC_KEY"]
    del env["ALIXPAY_BASE_URL"]
    assert named(problems_of(env, tmp_path)) == {"ALIXPAY_PUBLIC_KEY", "ALIXPAY_BASE_URL"}


# --------------------------------------------------------------------------- AliX: enabled


def test_full_alix_config_is_enabled(keys: Keys, tmp_path: Path) -> None:
    s = load_settings(alix_env(keys, BASE_URL), tmp_path)
    a = s.provider("alixpay")
    assert isinstance(a, AlixPaySettings)
    assert s.provider("alixpay") is a
    assert a.partner_code == "rampwatch-test"
    assert a.secret_keys == (Named("ALIXPAY_SECRET_KEY", SECRET),)
    assert a.webhook_secret_keys == (Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),)
    assert a.secret_key == SECRET
    assert a.webhook_secret_key == WEBHOOK_SECRET
    assert a.private_key.name == "ALIXPAY_PRIVATE_KEY"
    assert a.private_key.value.private_numbers() == keys.partner.private.private_numbers()
    assert [k.name for k in a.public_keys] == ["ALIXPAY_PUBLIC_KEY"]
    assert a.public_keys[0].value.public_numbers() == keys.alix.public.public_numbers()
    assert a.base_url == BASE_URL
    assert (a.poll.backoff, a.poll.horizon) == (DEFAULT_BACKOFF, 72 * 3600)
    assert a.poll.expected("AWAITING_PAYMENT") == 3600  # AliX's own flow, not the generic 2h
    assert a.timeout == 10.0


def test_alix_optional_values_are_read(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, "https://sandbox.alix.example/")
    env.update({"ALIXPAY_POLL_BACKOFF": "30s,1m,5m", "ALIXPAY_POLL_HORIZON": "72h", "ALIXPAY_TIMEOUT": "2.5"})
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.base_url == "https://sandbox.alix.example"  # trailing slash dropped
    assert (a.poll.backoff, a.poll.horizon) == ((30, 60, 300), 259200)
    assert a.timeout == 2.5


# --------------------------------------------------------------------------- AliX: key formats


def _key_value(form: str, pem: str, tmp_path: Path) -> str:
    if form == "pem":
        return pem
    if form == "pem_with_surrounding_whitespace":
        return "\n  " + pem + "  \n"
    if form == "pem_escaped_newlines":
        escaped = pem.replace("\n", "\\n")
        assert "\n" not in escaped
        return escaped
    if form == "path":
        path = tmp_path / "key.pem"
        path.write_text(pem)
        return str(path)
    if form == "base64":
        return base64.b64encode(pem.encode()).decode()
    raise AssertionError(form)


KEY_FORMS = ["pem", "pem_with_surrounding_whitespace", "pem_escaped_newlines", "path", "base64"]


@pytest.mark.parametrize("form", KEY_FORMS)
def test_public_key_forms(keys: Keys, tmp_path: Path, form: str) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_PUBLIC_KEY"] = _key_value(form, keys.alix.public_pem, tmp_path)
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.public_keys[0].value.public_numbers() == keys.alix.public.public_numbers()


@pytest.mark.parametrize("form", KEY_FORMS)
def test_private_key_forms(keys: Keys, tmp_path: Path, form: str) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_PRIVATE_KEY"] = _key_value(form, keys.partner.private_pem, tmp_path)
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.private_key.value.private_numbers() == keys.partner.private.private_numbers()


def test_pkcs1_pems_are_accepted(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_PUBLIC_KEY"] = public_pem_pkcs1(keys.alix.public)  # BEGIN RSA PUBLIC KEY
    env["ALIXPAY_PRIVATE_KEY"] = private_pem_pkcs1(keys.partner.private)  # BEGIN RSA PRIVATE KEY
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.public_keys[0].value.public_numbers() == keys.alix.public.public_numbers()
    assert a.private_key.value.private_numbers() == keys.partner.private.private_numbers()


def _garbage(tmp_path: Path) -> dict[str, str]:
    bad_file = tmp_path / "not-a-key.txt"
    bad_file.write_text("GARBAGE-FILE-CONTENT-not-a-key")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    ec_private_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return {
        "plain_text": "GARBAGE-not-a-key-Zq93xK",
        "pem_shaped_garbage": "-----BEGIN PUBLIC KEY-----\nR0FSQkFHRVpxOTN4Sw==\n-----END PUBLIC KEY-----\n",
        "base64_of_non_pem": base64.b64encode(b"GARBAGE-not-a-pem-Zq93xK").decode(),
        "path_to_non_pem": str(bad_file),
        "missing_file": str(tmp_path / "does-not-exist.pem"),
        "ec_public_key": ec_pem,
        "ec_private_key": ec_private_pem,
    }


GARBAGE_KINDS = [
    "plain_text",
    "pem_shaped_garbage",
    "base64_of_non_pem",
    "path_to_non_pem",
    "missing_file",
    "ec_public_key",
    "ec_private_key",
]


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
@pytest.mark.parametrize("name", ["ALIXPAY_PUBLIC_KEY", "ALIXPAY_PRIVATE_KEY"])
def test_garbage_key_is_a_named_problem_that_does_not_leak_the_key(
    keys: Keys, tmp_path: Path, name: str, kind: str
) -> None:
    value = _garbage(tmp_path)[kind]
    env = alix_env(keys, BASE_URL)
    env[name] = value
    with pytest.raises(ConfigError) as info:
        load_settings(env, tmp_path)
    assert named(info.value.problems) == {name}
    message = str(info.value) + "\n".join(info.value.problems)
    for line in value.strip().splitlines():
        if len(line) >= 8 and "-----" not in line:
            assert line not in message


@pytest.mark.parametrize(
    ("name", "pem_attr"),
    [("ALIXPAY_PUBLIC_KEY", "private_pem"), ("ALIXPAY_PRIVATE_KEY", "public_pem")],
)
def test_key_of_the_wrong_kind_is_a_problem_that_does_not_leak_it(
    keys: Keys, tmp_path: Path, name: str, pem_attr: str
) -> None:
    wrong = getattr(keys.partner, pem_attr)
    env = alix_env(keys, BASE_URL)
    env[name] = wrong
    with pytest.raises(ConfigError) as info:
        load_settings(env, tmp_path)
    assert named(info.value.problems) == {name}
    body = "".join(line for line in wrong.splitlines() if "-----" not in line)
    for chunk in (body[i : i + 16] for i in range(0, len(body) - 16, 16)):
        assert chunk not in str(info.value)


# --------------------------------------------------------------------------- rotation twins

TWINS = ("ALIXPAY_SECRET_KEY", "ALIXPAY_WEBHOOK_SECRET_KEY", "ALIXPAY_PUBLIC_KEY")


def test_previous_twins_are_second_named_values(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_PUBLIC_KEY_PREVIOUS"] = keys.alix_old.public_pem
    env["ALIXPAY_SECRET_KEY_PREVIOUS"] = "sk-partner-secret-0000"
    env["ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS"] = "whsec-partner-0000"
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.secret_keys == (
        Named("ALIXPAY_SECRET_KEY", SECRET),
        Named("ALIXPAY_SECRET_KEY_PREVIOUS", "sk-partner-secret-0000"),
    )
    assert a.webhook_secret_keys == (
        Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),
        Named("ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS", "whsec-partner-0000"),
    )
    assert [k.name for k in a.public_keys] == ["ALIXPAY_PUBLIC_KEY", "ALIXPAY_PUBLIC_KEY_PREVIOUS"]
    assert a.public_keys[0].value.public_numbers() == keys.alix.public.public_numbers()
    assert a.public_keys[1].value.public_numbers() == keys.alix_old.public.public_numbers()
    # The current values stay first: they are what we sign and send with.
    assert a.secret_key == SECRET
    assert a.webhook_secret_key == WEBHOOK_SECRET


@pytest.mark.parametrize("name", TWINS)
def test_only_the_set_twin_is_added(keys: Keys, tmp_path: Path, name: str) -> None:
    env = alix_env(keys, BASE_URL)
    env[name + "_PREVIOUS"] = keys.alix_old.public_pem if name.endswith("PUBLIC_KEY") else "old-value"
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    counts = {
        "ALIXPAY_SECRET_KEY": len(a.secret_keys),
        "ALIXPAY_WEBHOOK_SECRET_KEY": len(a.webhook_secret_keys),
        "ALIXPAY_PUBLIC_KEY": len(a.public_keys),
    }
    assert counts == {n: (2 if n == name else 1) for n in TWINS}


@pytest.mark.parametrize("name", TWINS)
def test_previous_without_its_current_twin_is_a_problem(keys: Keys, tmp_path: Path, name: str) -> None:
    env = alix_env(keys, BASE_URL)
    env[name + "_PREVIOUS"] = env.pop(name)
    problems = problems_of(env, tmp_path)
    assert name + "_PREVIOUS" in named(problems)
    assert name in named(problems)
    twin_problem = next(p for p in problems if p.startswith(name + "_PREVIOUS"))
    assert name in twin_problem.removeprefix(name + "_PREVIOUS")


def test_a_previous_twin_alone_is_partial_alix_config(tmp_path: Path) -> None:
    problems = problems_of({"ALIXPAY_SECRET_KEY_PREVIOUS": "old"}, tmp_path)
    assert named(problems) == set(ALIX_REQUIRED) | {"ALIXPAY_SECRET_KEY_PREVIOUS"}


# --------------------------------------------------------------------------- secrecy


def test_secrets_never_appear_in_repr(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_PUBLIC_KEY_PREVIOUS"] = keys.alix_old.public_pem
    env["ALIXPAY_SECRET_KEY_PREVIOUS"] = "sk-partner-secret-0000"
    env["ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS"] = "whsec-partner-0000"
    env["RAMPWATCH_API_TOKEN"] = "api-token-0123456789-secret"
    s = load_settings(env, tmp_path)
    assert s.provider("alixpay") is not None
    texts = [
        repr(s),
        str(s),
        repr(s.provider("alixpay")),
        str(s.provider("alixpay")),
        repr(s.provider("alixpay").secret_keys),
    ]
    texts += [repr(n) for n in (*s.provider("alixpay").public_keys, s.provider("alixpay").private_key)]
    secrets = [
        SECRET,
        WEBHOOK_SECRET,
        "sk-partner-secret-0000",
        "whsec-partner-0000",
        "api-token-0123456789-secret",
        str(keys.partner.private.private_numbers().d)[:20],
        str(keys.alix.public.public_numbers().n)[:20],
    ]
    pem_lines = [
        line
        for pem in (keys.partner.private_pem, keys.alix.public_pem, keys.alix_old.public_pem)
        for line in pem.splitlines()
        if "-----" not in line
    ]
    for text in texts:
        for secret in secrets + pem_lines:
            assert secret not in text
    # The names stay visible: they are what an operator needs.
    assert "rampwatch-test" in repr(s)
    assert "ALIXPAY_SECRET_KEY" in repr(s.provider("alixpay").secret_keys)


@pytest.mark.parametrize(
    ("name", "url", "password"),
    [
        ("DATABASE_URL", "postgres://rampwatch:pg-pass-Zq93xK@db.internal:5432/rampwatch", "pg-pass-Zq93xK"),
        ("REDIS_URL", "rediss://:redis-pass-Zq93xK@cache.internal:6380/0", "redis-pass-Zq93xK"),
    ],
)
def test_url_passwords_never_appear_in_repr(tmp_path: Path, name: str, url: str, password: str) -> None:
    s = load_settings({name: url}, tmp_path)
    assert password in (s.database_url + s.redis_url)  # still usable by the code
    assert password not in repr(s)
    assert password not in str(s)


# --------------------------------------------------------------------------- database URL


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u:p@h:5432/db?sslmode=require", "postgresql+psycopg://u:p@h:5432/db?sslmode=require"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("sqlite:////var/lib/rw.sqlite3", "sqlite:////var/lib/rw.sqlite3"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
    ],
)
def test_database_url_is_normalised(tmp_path: Path, given: str, expected: str) -> None:
    assert load_settings({"DATABASE_URL": given}, tmp_path).database_url == expected


# --------------------------------------------------------------------------- durations and poll policy


def test_poll_backoff_is_parsed(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_POLL_BACKOFF"] = "30s,1m,5m"
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.poll.backoff == (30, 60, 300)
    env["ALIXPAY_POLL_BACKOFF"] = " 10 , 2M,1h ,1d"
    a = load_settings(env, tmp_path).provider("alixpay")
    assert a is not None
    assert a.poll.backoff == (10, 120, 3600, 86400)


@pytest.mark.parametrize(
    ("value", "bad_part"),
    [
        ("30s,soon,5m", "soon"),
        ("0", "0"),
        ("30s,,1m", ""),
        ("-5", "-5"),
        ("1.5m", "1.5m"),
        ("5x", "5x"),
        ("30s,1m,0s", "0s"),
    ],
)
def test_bad_poll_backoff_is_listed(keys: Keys, tmp_path: Path, value: str, bad_part: str) -> None:
    env = alix_env(keys, BASE_URL)
    env["ALIXPAY_POLL_BACKOFF"] = value
    problems = problems_of(env, tmp_path)
    assert named(problems) == {"ALIXPAY_POLL_BACKOFF"}
    assert repr(bad_part) in problems[0]


def test_bad_poll_values_are_all_listed(keys: Keys, tmp_path: Path) -> None:
    env = alix_env(keys, BASE_URL)
    env.update({"ALIXPAY_POLL_BACKOFF": "1m,later", "ALIXPAY_POLL_HORIZON": "0", "ALIXPAY_TIMEOUT": "x"})
    problems = problems_of(env, tmp_path)
    assert named(problems) == {"ALIXPAY_POLL_BACKOFF", "ALIXPAY_POLL_HORIZON", "ALIXPAY_TIMEOUT"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        (" 5M ", 300),
        ("72H", 259200),
        ("0", 0),
        ("", None),
        ("s", None),
        ("-5", None),
        ("1.5m", None),
        ("5x", None),
        ("5 m", None),
        ("m5", None),
    ],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_poll_policy_delay_clamps_to_the_schedule() -> None:
    policy = PollPolicy(backoff=(30, 60, 300), horizon=3600)
    assert [policy.delay(n) for n in (-3, 0, 1, 2, 3, 50)] == [30, 30, 60, 300, 300, 300]
    assert PollPolicy().delay(0) == 30
    assert PollPolicy().delay(10**6) == 3600


# --------------------------------------------------------------------------- API token


@pytest.mark.parametrize("token", ["short", "x" * 15, "  " + "y" * 15 + "  "])
def test_short_api_token_is_a_problem(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"RAMPWATCH_API_TOKEN": token}, tmp_path)
    assert named(info.value.problems) == {"RAMPWATCH_API_TOKEN"}
    assert token.strip() not in str(info.value)


def test_sixteen_character_api_token_is_accepted(tmp_path: Path) -> None:
    assert load_settings({"RAMPWATCH_API_TOKEN": "z" * 16}, tmp_path).api_token == "z" * 16


# --------------------------------------------------------------------------- frozen


def test_settings_are_frozen(keys: Keys, tmp_path: Path) -> None:
    s = load_settings(alix_env(keys, BASE_URL), tmp_path)
    assert s.provider("alixpay") is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.redis_url = "redis://elsewhere:6379/0"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.providers = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.providers["alixpay"] = None  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.provider("alixpay").partner_code = "someone-else"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.provider("alixpay").poll.horizon = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.provider("alixpay").secret_keys[0].value = "stolen"  # type: ignore[misc]
    assert isinstance(s.provider("alixpay").secret_keys, tuple)
    assert isinstance(s.provider("alixpay").public_keys, tuple)
    assert isinstance(s.provider("alixpay").poll.backoff, tuple)


def test_safe_urls_mask_passwords(tmp_path) -> None:
    s = load_settings(
        {"DATABASE_URL": "postgres://app:s3cret@db:5432/rw", "REDIS_URL": "redis://:r3dis@cache:6379/0"},
        tmp_path,
    )
    assert s.safe_database_url == "postgresql+psycopg://app:***@db:5432/rw"
    assert s.safe_redis_url == "redis://:***@cache:6379/0"
    assert load_settings({}, tmp_path).safe_redis_url == "redis://127.0.0.1:6379/0"


# ------------------------------------------------------------ tokens and notifications

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
WHSEC_OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


def test_notifications_and_the_operator_token_are_read(tmp_path: Path) -> None:
    s = load_settings(
        {
            "RAMPWATCH_API_TOKEN": "p" * 20,
            "RAMPWATCH_OPS_TOKEN": "o" * 20,
            "NOTIFY_URL": "https://partner.example/hooks/",
            "NOTIFY_SECRET": WHSEC,
            "NOTIFY_SECRET_PREVIOUS": WHSEC_OLD,
            "NOTIFY_TIMEOUT": "2.5",
            "NOTIFY_MAX_ATTEMPTS": "3",
            "NOTIFY_BACKOFF": "1s,1m",
        },
        tmp_path,
    )
    assert (s.api_token, s.ops_token) == ("p" * 20, "o" * 20)
    assert s.notify_url == "https://partner.example/hooks"
    assert [(n.name, n.value) for n in s.notify_secrets] == [
        ("NOTIFY_SECRET", WHSEC),
        ("NOTIFY_SECRET_PREVIOUS", WHSEC_OLD),
    ]
    assert (s.notify_timeout, s.notify_max_attempts, s.notify_backoff) == (2.5, 3, (1, 60))
    assert WHSEC not in repr(s) and "o" * 20 not in repr(s)


def test_notifications_are_off_by_default(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path)
    assert s.notify_url is None and s.notify_secrets == () and s.ops_token is None
    assert s.notify_max_attempts >= 5 and s.notify_backoff[0] <= 30


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"NOTIFY_URL": "https://p.example/h"}, "NOTIFY_SECRET: required with NOTIFY_URL"),
        ({"NOTIFY_SECRET": "not-whsec"}, "NOTIFY_SECRET: expected whsec_"),
        ({"NOTIFY_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "NOTIFY_SECRET: expected whsec_"),
        ({"NOTIFY_SECRET": "whsec_%%%"}, "NOTIFY_SECRET: expected whsec_"),
        ({"NOTIFY_SECRET_PREVIOUS": WHSEC}, "NOTIFY_SECRET_PREVIOUS is set but NOTIFY_SECRET is not"),
        ({"NOTIFY_URL": "ftp://p.example", "NOTIFY_SECRET": WHSEC}, "NOTIFY_URL: expected a URL"),
        ({"RAMPWATCH_OPS_TOKEN": "short"}, "RAMPWATCH_OPS_TOKEN: must be at least 16"),
        (
            {"RAMPWATCH_API_TOKEN": "same" * 5, "RAMPWATCH_OPS_TOKEN": "same" * 5},
            "RAMPWATCH_OPS_TOKEN: must differ",
        ),
        ({"NOTIFY_MAX_ATTEMPTS": "0"}, "NOTIFY_MAX_ATTEMPTS: must be at least 1"),
        ({"NOTIFY_BACKOFF": "5s,soon"}, "NOTIFY_BACKOFF: 'soon'"),
    ],
)
def test_bad_notification_settings_are_named(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env, tmp_path)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
    assert all("k" * 20 not in p for p in err.value.problems)


def test_stuck_times_default_to_each_provider_flow_and_are_overridden_per_status(
    keys: Keys, tmp_path: Path
) -> None:
    env = alix_env(keys, "https://sandbox.alix.example/")
    a = load_settings(env, tmp_path).provider("alixpay")
    assert [a.poll.expected(s) for s in ("CREATED", "AWAITING_PAYMENT", "PROCESSING", "SUCCESS")] == [
        900,
        3600,
        3600,
        None,
    ]
    env["ALIXPAY_STUCK_AFTER"] = "awaiting_payment=30m, ON_HOLD=2d"
    a = load_settings(env, tmp_path).provider("alixpay")
    assert [a.poll.expected(s) for s in ("AWAITING_PAYMENT", "ON_HOLD", "PROCESSING")] == [1800, 172800, 3600]


@pytest.mark.parametrize("value", ["SUCCESS=1h", "AWAITING_PAYMENT", "AWAITING_PAYMENT=soon", "PROCESSING=0"])
def test_bad_stuck_times_are_named(keys: Keys, tmp_path: Path, value: str) -> None:
    env = {**alix_env(keys, "https://sandbox.alix.example/"), "ALIXPAY_STUCK_AFTER": value}
    with pytest.raises(ConfigError) as err:
        load_settings(env, tmp_path)
    assert any(p.startswith("ALIXPAY_STUCK_AFTER: ") and "STATUS=duration" in p for p in err.value.problems)


def test_log_format_and_error_reporting_are_read(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path)
    assert (s.log_format, s.sentry_dsn, s.sentry_environment) == ("text", None, None)
    dsn = "https://public-key@o1.ingest.sentry.io/42"
    s = load_settings(
        {"RAMPWATCH_LOG_FORMAT": "json", "SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "staging"}, tmp_path
    )
    assert (s.log_format, s.sentry_dsn, s.sentry_environment) == ("json", dsn, "staging")
    assert "public-key" not in repr(s)
    with pytest.raises(ConfigError) as err:
        load_settings({"RAMPWATCH_LOG_FORMAT": "xml", "SENTRY_DSN": "not a url"}, tmp_path)
    assert {p.split(":")[0] for p in err.value.problems} == {"RAMPWATCH_LOG_FORMAT", "SENTRY_DSN"}
