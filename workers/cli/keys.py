"""``rampwatch keys generate``: our RSA key pair for a provider that verifies our requests.

What each provider is given and what our settings take (docs/providers.md):

* AliX Pay verifies our request signatures with the public key registered at
  onboarding: an RSA key, PEM. We keep the private half as a PKCS#8 PEM file
  (``ALIXPAY_PRIVATE_KEY`` takes its path, its text or base64 of it) and hand over
  the public half as a ``BEGIN PUBLIC KEY`` (SubjectPublicKeyInfo) PEM, which
  Node's ``createVerify`` (AliX's stack) reads.
* Changelly's keys are base64-encoded PKCS#1 PEM (its SDK loads them with
  ``type: 'pkcs1', encoding: 'base64'``): the private half is written as a PKCS#1
  ``RSA PRIVATE KEY`` PEM (``CHANGELLY_PRIVATE_KEY``), and the public half is
  printed as base64 of its PKCS#1 ``RSA PUBLIC KEY`` PEM, the form Changelly uses.

Fuspay signs with shared keys it issues (no key pair): nothing to generate.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import click

from workers.cli.common import Failure, emit_json, json_option, say

SETTING = {"alixpay": "ALIXPAY_PRIVATE_KEY", "changelly": "CHANGELLY_PRIVATE_KEY"}
KEY_BITS = 2048


def key_pair(provider: str) -> tuple[bytes, str]:
    """A new RSA-2048 pair for ``provider``: the private half as written to the file,
    the public half as the provider is given it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    if provider == "changelly":
        from orders.providers.changelly.signing import private_key_pem, public_key_pem

        return private_key_pem(key), base64.b64encode(public_key_pem(key.public_key())).decode("ascii")
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode("ascii").strip()


def write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600); an existing file
    only with ``force`` (replaced, never written through: its old mode does not stay)."""
    if path.exists() and not force:
        raise Failure(f"{path} exists: refusing to overwrite a key (--force replaces it)")
    if force and path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@click.group()
def keys() -> None:
    """Key pairs for the providers that verify our requests."""


@keys.command("generate")
@click.argument("provider", type=click.Choice(sorted(SETTING)))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: ./<provider>_private.pem).",
)
@click.option("--force", is_flag=True, help="Replace an existing file.")
@json_option
def generate(provider: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Make an RSA-2048 pair for PROVIDER: the private half goes to a file (mode 0600)
    for our settings, the public half is printed, to hand to the provider."""
    path = out or Path(f"{provider}_private.pem")
    if not path.parent.is_dir():
        raise Failure(f"no folder {path.parent} to write {path.name} in")
    private, public = key_pair(provider)
    write_private(path, private, force=force)
    if as_json:
        emit_json(
            {
                "provider": provider,
                "private_key_path": str(path),
                "setting": SETTING[provider],
                "public_key": public,
            }
        )
        return
    say(f"private key written to {path} (mode 0600): set {SETTING[provider]}={path.resolve()}")
    say(f"give {provider} the public key below:")
    click.echo(public)
