"""The stock RQ baseline's job (``bench_drain``): a function that does nothing."""


def noop() -> None:
    return None
