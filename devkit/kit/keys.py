"""RSA keys of the sandboxes: made fresh for a test, or kept in PEM files across dev runs.

AliX signs its answers and IPNs and Changelly its callbacks with RSA keys; a
sandbox needs its own key pair, and verifies requests with the partner's public
key. ``make run`` keeps every pair under ``var/dev/`` so the settings it wires
stay valid from one run to the next; this module owns making, loading and
keeping them (private files mode 0600, never overwritten).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey


def new_rsa_key() -> RSAPrivateKey:
    """A fresh 2048-bit RSA key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_rsa_public_key(path: Path) -> RSAPublicKey:
    """The RSA public key in the PEM file ``path``; ValueError when it holds another kind."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_or_create_rsa_key(
    private_path: Path,
    public_path: Path,
    *,
    private_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    public_format: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo,
) -> RSAPrivateKey:
    """The RSA key in the PEM file ``private_path``, created when absent (``new_rsa_key``,
    written in ``private_format``, unencrypted, mode 0600; an existing file is never
    overwritten). Its public half is written to ``public_path`` in ``public_format``
    when that file is absent or differs. Missing folders are created. ValueError when
    ``private_path`` holds no RSA private key."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError(f"{private_path} is not an RSA private key")
    else:
        key = new_rsa_key()
        pem = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
        # O_EXCL: two runs starting at once must not both write (and disagree on) the key.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, public_format)
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        public_path.write_bytes(public_pem)
    return key
