"""``python -m devkit.alixpay``: the AliX sandbox alone, with its key kept in a folder.

The partner's public key comes from a PEM file; AliX's own key pair is kept in
``--alix-key-dir`` across restarts (so a client configured with its public key
keeps verifying), or made fresh per run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from devkit.alixpay.sandbox import IPN_BY_WEBHOOK_KEY, IPN_SECRETS, AlixSandbox
from devkit.kit import load_or_create_rsa_key, load_rsa_public_key, run_cli


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partner-code", required=True)
    p.add_argument("--secret-key", required=True, help="the partner API secret key")
    p.add_argument("--webhook-secret-key", required=True)
    p.add_argument(
        "--partner-public-key", required=True, metavar="PATH", help="PEM of the partner's public key"
    )
    p.add_argument(
        "--alix-key-dir",
        default=None,
        metavar="DIR",
        help="keep AliX's key pair here (alix_private.pem, alix_public.pem); reused across restarts",
    )
    p.add_argument(
        "--ipn-secret",
        choices=IPN_SECRETS,
        default=IPN_BY_WEBHOOK_KEY,
        help="which secret ends signed strings",
    )
    p.add_argument("--envelope", action="store_true", help="wrap answers in {success, message, data}")


def _build(args: argparse.Namespace) -> AlixSandbox:
    partner_key = load_rsa_public_key(Path(args.partner_public_key))
    alix_key = None
    if args.alix_key_dir:
        key_dir = Path(args.alix_key_dir)
        # PKCS#8 private, SubjectPublicKeyInfo public: the kit's defaults
        alix_key = load_or_create_rsa_key(key_dir / "alix_private.pem", key_dir / "alix_public.pem")
    return AlixSandbox(
        partner_code=args.partner_code,
        secret_key=args.secret_key,
        webhook_secret_key=args.webhook_secret_key,
        partner_public_key=partner_key,
        alix_private_key=alix_key,
        callback_url=args.callback_url,
        ipn_secret=args.ipn_secret,
        envelope=args.envelope,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the AliX sandbox until SIGTERM or SIGINT; the exit code."""
    return run_cli(
        AlixSandbox.name,
        argv,
        description="A fake AliX Pay on 127.0.0.1 (orders in memory; control API under /sandbox/).",
        callback_help="where IPNs are POSTed (loopback only)",
        add_arguments=_arguments,
        build=_build,
    )
