"""Run a child process without some of root's capabilities, so that a test
running as root (as in the project's sandbox) meets the refusals an ordinary
user meets: a port below 1024, a file it may not read."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

CAP_DAC_OVERRIDE = 1  # read and write whatever the mode bits say
CAP_DAC_READ_SEARCH = 2  # read whatever the mode bits say
CAP_NET_BIND_SERVICE = 10  # bind ports below 1024
_PR_CAPBSET_DROP = 24


def without_capabilities(*caps: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that takes ``caps`` from the child's bounding set (root's
    capabilities after ``exec``), or None when this process is not root (its
    children have none of them anyway)."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in caps:
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")

    return drop
