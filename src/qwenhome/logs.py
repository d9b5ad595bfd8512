"""qwenhome's log: the ``qwenhome`` logger and one child per module
(``logging.getLogger(__name__)``), written to stderr when asked for
(``-v``, ``QWENHOME_LOG``; see :func:`qwenhome.config.log_level`).

The library only logs; the entry points (the CLI, the API server) call
:func:`configure`. Without it nothing changes: Python shows warnings and
errors only, and qwenhome logs swallowed failures at debug level.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from .errors import redact

ROOT = "qwenhome"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(threadName)s] %(message)s"

_handler: logging.Handler | None = None


class RedactingFormatter(logging.Formatter):
    """Every line as :func:`qwenhome.errors.redact` leaves it, tracebacks
    included: no module has to remember which of its values hold a credential."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: int | None, stream: TextIO | None = None) -> None:
    """Write qwenhome's records of ``level`` and above to ``stream`` (stderr).
    None leaves logging as it is. Calling it again replaces the handler."""
    global _handler
    if level is None:
        return
    logger = logging.getLogger(ROOT)
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(RedactingFormatter(FORMAT, "%H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(level)
    logger.propagate = False  # once here, not again through a handler an embedding program set on the root
