"""Process logging set-up. Log lines carry ids and statuses, never bodies, keys or
personal data; the code that logs is responsible for that, this only formats."""

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our job arguments hold raw callback bodies: RQ must not echo them at INFO.
    logging.getLogger("rq.worker").setLevel(max(logging.getLevelName(level), logging.WARNING))
