"""``python -m devkit.changelly``: the Changelly sandbox alone, its callback key kept in a folder.

The partner's public key comes from a PEM file; the callback key pair is kept
in ``--callback-key-dir`` across restarts, in PKCS#1 as Changelly hands keys
out, or made fresh per run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from devkit.changelly.sandbox import SHAPES, ChangellySandbox
from devkit.kit import load_or_create_rsa_key, load_rsa_public_key, run_cli


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-key", required=True, help="the X-Api-Key to expect")
    p.add_argument(
        "--partner-public-key", required=True, metavar="PATH", help="PEM of the partner's public key"
    )
    p.add_argument(
        "--callback-key-dir",
        default=None,
        metavar="DIR",
        help="keep the callback key pair here (callback_private.pem, callback_public.pem); reused across restarts",
    )
    p.add_argument("--response-shape", choices=SHAPES, default="object", help="GET /v1/orders answer shape")


def _build(args: argparse.Namespace) -> ChangellySandbox:
    partner_key = load_rsa_public_key(Path(args.partner_public_key))
    callback_key = None
    if args.callback_key_dir:
        key_dir = Path(args.callback_key_dir)
        callback_key = load_or_create_rsa_key(
            key_dir / "callback_private.pem",
            key_dir / "callback_public.pem",
            # PKCS#1 both, as Changelly hands keys out (signing.private_key_pem, public_key_pem)
            private_format=serialization.PrivateFormat.TraditionalOpenSSL,
            public_format=serialization.PublicFormat.PKCS1,
        )
    return ChangellySandbox(
        api_key=args.api_key,
        partner_public_key=partner_key,
        callback_private_key=callback_key,
        callback_url=args.callback_url,
        response_shape=args.response_shape,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Changelly sandbox until SIGTERM or SIGINT; the exit code."""
    return run_cli(
        ChangellySandbox.name,
        argv,
        description="A fake Changelly Fiat API on 127.0.0.1 (orders in memory; control API under /sandbox/).",
        callback_help="where callbacks are POSTed (loopback only)",
        add_arguments=_arguments,
        build=_build,
    )
