"""``rampwatch keys generate``: a pair in the provider's form, the private half kept safe."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from orders.providers.alixpay import signing as alix
from orders.providers.changelly import signing as changelly
from workers.cli import cli


def test_alixpay_pair_private_file_0600_public_printed(tmp_path: Path) -> None:
    out = tmp_path / "ours.pem"
    done = CliRunner().invoke(cli, ["keys", "generate", "alixpay", "--out", str(out)])
    assert done.exit_code == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, RSAPrivateKey) and private.key_size == 2048
    assert done.stdout.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in done.stdout
    public = serialization.load_pem_public_key(done.stdout.encode())
    assert isinstance(public, RSAPublicKey)
    signature = alix.sign(["o-1", "sell", 1000, "SUCCESS"], "s", private)
    assert alix.verify(["o-1", "sell", 1000, "SUCCESS"], signature, [_named(public)], [_named("s")])
    assert f"ALIXPAY_PRIVATE_KEY={out}" in done.stderr


def test_changelly_pair_is_base64_pkcs1(tmp_path: Path) -> None:
    out = tmp_path / "changelly.pem"
    done = CliRunner().invoke(cli, ["keys", "generate", "changelly", "--out", str(out), "--json"])
    assert done.exit_code == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["setting"] == "CHANGELLY_PRIVATE_KEY" and answer["private_key_path"] == str(out)
    assert out.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    public_pem = base64.b64decode(answer["public_key"], validate=True)
    assert public_pem.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    private = serialization.load_pem_private_key(out.read_bytes(), password=None)
    public = serialization.load_pem_public_key(public_pem)
    signature = changelly.sign_request("https://x/v1/orders", None, private)  # type: ignore[arg-type]
    assert changelly.verify_request("https://x/v1/orders", None, signature, public)  # type: ignore[arg-type]


def test_an_existing_key_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    out.write_text("keep me")
    refused = CliRunner().invoke(cli, ["keys", "generate", "alixpay", "--out", str(out)])
    assert refused.exit_code == 1 and "refusing to overwrite" in refused.stderr
    assert out.read_text() == "keep me" and refused.stdout == ""
    out.chmod(0o644)
    forced = CliRunner().invoke(cli, ["keys", "generate", "alixpay", "--out", str(out), "--force"])
    assert forced.exit_code == 0
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert CliRunner().invoke(cli, ["keys", "generate", "fuspay"]).exit_code == 2  # shared keys: no pair


def _named(value: object) -> object:
    from config import Named

    return Named("X", value)
