"""``make soak``: minutes of mixed traffic and faults through real processes, then a check.

``run`` starts the stack and drives it, ``traffic`` creates and moves the orders,
``faults`` injects the faults, ``measure`` keeps the score and prints the table.
Run it as ``python -m devkit.soak [--seconds N]``.
"""
