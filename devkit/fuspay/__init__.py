"""Fuspay Axis's fake: ``sandbox`` (the HTTP fake, signing events as Fuspay does), ``model``
(its orders and event bodies), ``cli`` (``python -m devkit.fuspay``) and ``demo`` (its part
of ``make run``)."""
