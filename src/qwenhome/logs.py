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

ROOT = "qwenhome"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(threadName)s] %(message)s"

_handler: logging.Handler | None = None


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
    _handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(level)
    logger.propagate = False  # once here, not again through a handler an embedding program set on the root
