"""The dev kit: what development and the tests use, never the product.

It owns the provider sandboxes (real HTTP fakes of AliX Pay, Fuspay Axis and
Changelly on 127.0.0.1, one folder per provider on the shared ``devkit.kit``),
the ``make run`` supervisor (``python -m devkit``) and the private Redis helper.
It may import the product (a sandbox signs with the same ``signing`` module that
verifies); no product module imports it, and it is not in the wheel, so it runs
from a checkout only.
"""
