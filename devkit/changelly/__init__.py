"""Changelly Fiat API's fake: ``sandbox`` (the HTTP fake, signing callbacks as Changelly
does), ``model`` (its orders), ``cli`` (``python -m devkit.changelly``) and ``demo`` (its
part of ``make run``)."""
