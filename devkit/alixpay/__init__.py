"""AliX Pay's fake: ``sandbox`` (the HTTP fake, signing as AliX does), ``model`` (its
orders), ``cli`` (``python -m devkit.alixpay``) and ``demo`` (its part of ``make run``)."""
