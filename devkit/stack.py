"""What each provider brings to the dev stack, and how the supervisor talks.

A provider's ``devkit/<slug>/demo.py`` has one ``start`` function: it starts the
provider's sandbox wired to the stack's web process and returns a
``ProviderStack``: the running sandbox, the settings rampwatch needs to talk to
it (key files under ``var/dev/``, never key text), and the demo orders
(``Scenario``) that show its flow. This module owns those two shapes, the key
pairs kept across runs (``keypair``) and the output lines (``say``, ``emit``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from devkit.kit import SandboxKit, load_or_create_rsa_key


def emit(line: str) -> None:
    """Print one whole line: one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """One line of the supervisor's own output (children's lines carry their name)."""
    emit(f"[rampwatch dev] {message}")


@dataclass
class Scenario:
    """One demo order: created through the API, moved by its sandbox."""

    provider: str
    order_id: str
    request: dict[str, Any]
    steps: list[str]
    sandbox: Any
    drop_callbacks: bool = False
    note: str = ""


@dataclass
class ProviderStack:
    """A provider's part of the running stack."""

    sandbox: SandboxKit
    settings: dict[str, str]  # environment variables for rampwatch, e.g. ALIXPAY_BASE_URL
    scenarios: list[Scenario] = field(default_factory=list)


# start(dev folder, web base URL, the environment as given, a stamp for order ids)
Starter = Callable[[Path, str, Mapping[str, str], str], ProviderStack]


def keypair(folder: Path, stem: str) -> tuple[RSAPrivateKey, Path, Path]:
    """The key kept in ``folder/<stem>_private.pem`` (PKCS#8; made once) and the paths of
    its two PEM files (the public one SubjectPublicKeyInfo)."""
    private, public = folder / f"{stem}_private.pem", folder / f"{stem}_public.pem"
    return load_or_create_rsa_key(private, public), private, public
