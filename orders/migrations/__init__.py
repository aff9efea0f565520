"""The Alembic environment (``env.py``) and its revision scripts (``versions/``).

A package, not a bare folder, so that a wheel ships every file here: ``rampwatch
migrate`` on a host runs from the installed package, never from a checkout.
"""
