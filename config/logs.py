"""Process logging set-up. Log lines carry ids and statuses, never bodies, keys or
personal data; the code that logs is responsible for that, this only formats."""

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our job arguments hold raw callback bodies: RQ must not echo them at INFO.
    logging.getLogger("rq.worker").setLevel(max(logging.getLevelName(level), logging.WARNING))
    # /readyz reads the schema revision through Alembic, which announces its dialect
    # at INFO every time: a probe every few seconds must not fill the web log with it.
    logging.getLogger("alembic.runtime.migration").setLevel(max(logging.getLevelName(level), logging.WARNING))
