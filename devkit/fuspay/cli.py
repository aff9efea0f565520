"""``python -m devkit.fuspay``: the Fuspay sandbox alone.

The partner credentials, the signing recipe and key mode it signs events with
(the settings rampwatch must match, doc bug F-7) and the GetOrder answer shape
are flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from devkit.fuspay.model import GETORDER_SHAPES
from devkit.fuspay.sandbox import FuspaySandbox
from devkit.kit import run_cli
from orders.providers.fuspay import signing


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partner-id", required=True)
    p.add_argument("--public-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--recipe", choices=signing.LOCAL_RECIPES, default=signing.HMAC_SHA512)
    p.add_argument("--key-mode", choices=signing.KEY_MODES, default=signing.PUBLIC_PLUS_SECRET)
    p.add_argument("--getorder-shape", choices=GETORDER_SHAPES, default="event")


def _build(args: argparse.Namespace) -> FuspaySandbox:
    return FuspaySandbox(
        partner_id=args.partner_id,
        public_key=args.public_key,
        secret_key=args.secret_key,
        recipe=args.recipe,
        key_mode=args.key_mode,
        callback_url=args.callback_url,
        getorder_shape=args.getorder_shape,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Fuspay sandbox until SIGTERM or SIGINT; the exit code."""
    return run_cli(
        FuspaySandbox.name,
        argv,
        description="A fake Fuspay Axis on 127.0.0.1 (orders in memory; control API under /sandbox/).",
        callback_help="default partner_callback_url (loopback only)",
        add_arguments=_arguments,
        build=_build,
    )
